"""End to end: the default scenario through the runner, its outputs, and the outcome rules."""

import json

import numpy as np
import pandas as pd
import pytest

from sim.experiments.runner import run, simulate

SUMMARY_KEYS = {"policy", "n_queries", "accuracy", "expected_accuracy", "tokens_generated",
                "tokens_allocated", "tokens_per_query", "abandon_rate", "e2el_ms", "ttft_ms",
                "queue_wait_ms", "request_throughput", "output_throughput", "sim_duration_s"}
QUERY_COLUMNS = {"policy", "query_id", "dataset", "arrival_s", "decision_s", "first_token_s",
                 "finish_s", "prompt_tokens", "budget", "tokens_needed", "tokens_generated",
                 "correct", "expected_accuracy", "abandoned", "tau_true", "tau_pred"}


@pytest.fixture(scope="module")
def default_run():
    return simulate("default")


def test_run_folder_has_the_promised_shapes(tmp_path):
    res = run("default", out=tmp_path / "r", queries=300)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["scenario"] == "default" and summary["seed"] == 0
    assert [r["policy"] for r in summary["results"]] == ["uniform", "clear", "clear-windowed"]
    for r in summary["results"]:
        assert SUMMARY_KEYS <= set(r)
        for k in ("e2el_ms", "ttft_ms", "queue_wait_ms"):
            assert set(r[k]) == {"mean", "median", "p90", "p99"}
        assert r["n_queries"] == 300
    q = pd.read_parquet(tmp_path / "r" / "queries.parquet")
    assert QUERY_COLUMNS <= set(q.columns) and len(q) == 900
    assert (tmp_path / "r" / "scenario.yaml").is_file()
    assert res.out_dir == tmp_path / "r"


def test_clear_beats_uniform_on_the_default_scenario(default_run):
    by = {r["policy"]: r for r in default_run.summary["results"]}
    for name in ("clear", "clear-windowed"):
        assert by[name]["accuracy"] > by["uniform"]["accuracy"]
        assert by[name]["expected_accuracy"] > by["uniform"]["expected_accuracy"]
        assert by[name]["tokens_per_query"] <= by["uniform"]["tokens_per_query"]


def test_every_policy_sees_the_same_arrivals_and_outcomes(default_run):
    q = default_run.queries
    cols = ["query_id", "arrival_s", "tokens_needed", "tau_true", "tau_pred", "prompt_tokens"]
    frames = [g[cols].reset_index(drop=True) for _, g in q.groupby("policy", sort=False)]
    for f in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], f)


def test_budget_is_never_exceeded(default_run):
    sc = default_run.scenario
    q = default_run.queries
    for policy, g in q.groupby("policy"):
        assert g["budget"].sum() <= sc["budget"] * len(g)
        # per decision group too: each group spends at most its share
        per_group = g.groupby("decision_s").agg(spent=("budget", "sum"), n=("budget", "size"))
        assert (per_group["spent"] <= sc["budget"] * per_group["n"] + 1e-9).all(), policy


def test_outcome_rule(default_run):
    q = default_run.queries
    served = ~q["abandoned"]
    assert (q.loc[served, "tokens_generated"]
            == np.maximum(np.minimum(q["budget"], q["tokens_needed"]), 1)[served]).all()
    assert (q.loc[~served, "tokens_generated"] == 0).all()
    assert not q.loc[~served, "correct"].any()
    assert (q["abandoned"] == (q["budget"] == 0)).all()
    assert not (q["correct"] & (q["tokens_needed"] > q["budget"])).any()
    assert q.loc[~served, "finish_s"].isna().all() and q.loc[served, "finish_s"].notna().all()


def test_waiting_for_a_window_counts_as_latency(default_run):
    sc = default_run.scenario
    w = next(p["window_s"] for p in sc["policies"] if p["name"] == "clear-windowed")
    q = default_run.queries[default_run.queries["policy"] == "clear-windowed"]
    # the grid boundary, except the last window: the stream's end closes it (sim/core/allocation.py)
    expected = np.minimum((np.floor(q["arrival_s"] / w) + 1) * w, q["arrival_s"].max())
    np.testing.assert_allclose(q["decision_s"], expected)
    served = q[~q["abandoned"]]
    assert (served["scheduled_s"] >= served["decision_s"]).all()
    by = {r["policy"]: r for r in default_run.summary["results"]}
    # the mean wait for a window boundary is about w/2, and it shows in the latency figures
    assert by["clear-windowed"]["queue_wait_ms"]["mean"] > 0.4 * w * 1000
    assert by["clear"]["e2el_ms"]["median"] > by["clear-windowed"]["e2el_ms"]["median"]


def test_batch_clear_decides_once_at_the_last_arrival(default_run):
    q = default_run.queries[default_run.queries["policy"] == "clear"]
    assert q["decision_s"].nunique() == 1 and q["decision_s"].iloc[0] == q["arrival_s"].max()


def test_same_seed_same_bytes_other_seed_other_arrivals(tmp_path):
    a = run("default", out=tmp_path / "a", queries=200, seed=7)
    run("default", out=tmp_path / "b", queries=200, seed=7)
    c = run("default", out=tmp_path / "c", queries=200, seed=8)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert {"summary.json", "queries.parquet", "scenario.yaml", "report.html",
            "timeseries.parquet"} <= set(files)
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert not np.array_equal(a.queries["arrival_s"], c.queries["arrival_s"])


def test_overrides_change_the_run():
    res = simulate("default", queries=100, rate=5, budget=900, policies="uniform")
    sc = res.scenario
    assert sc["arrivals"]["queries"] == 100 and sc["arrivals"]["rate"] == 5 and sc["budget"] == 900
    assert [p["name"] for p in sc["policies"]] == ["uniform"]
    assert (res.queries["budget"] == 900).all()


def test_readme_example_table_is_what_the_default_run_prints(default_run):
    """The README shows the default scenario's table; it must stay the real output."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```\npolicy ", 1)[1].split("```", 1)[0]
    assert ("policy " + block).strip() == default_run.table().strip()
