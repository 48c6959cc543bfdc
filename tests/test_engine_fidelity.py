"""Step models, vLLM bench metrics, the run's time series and calibration against real runs."""

import json

import numpy as np
import pandas as pd
import pytest

from sim.core.metrics import goodput, stats_ms, weighted_stats_ms
from sim.core.stepmodels import LinearStepModel, TableStepModel, solve_steps


def test_linear_stretch_sums_to_the_step_by_step_total():
    m = LinearStepModel(0.007, 20e-6, 10e-6, 0.02e-6)
    n, ctx = 37, 37 * 900
    a, b = m.decode_stretch(n, ctx)
    total = sum(m.step_s(0, n, ctx + s * n) for s in range(250))
    assert 250 * a + b * 250 * 249 / 2 == pytest.approx(total, rel=1e-12)
    # solve_steps: the largest j whose steps end by the horizon
    for horizon in (0.0, a * 0.5, total, total - 1e-9, total + a):
        j = solve_steps(a, b, horizon)
        assert j * a + b * j * (j - 1) / 2 <= horizon < (j + 1) * a + b * (j + 1) * j / 2


def test_table_step_model_interpolates_and_reads_csv(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("tokens,step_ms\n1,8\n256,12\n2048,64\n")
    m = TableStepModel.from_csv(p)
    assert m.step_s(0, 1) == pytest.approx(0.008)
    assert m.step_s(100, 28) == pytest.approx(0.008 + (128 - 1) / 255 * 0.004)
    assert m.step_s(5000, 0) == pytest.approx(0.064)  # flat beyond the end
    assert m.decode_stretch(256, 0) == (pytest.approx(0.012), 0.0)
    bad = tmp_path / "bad.csv"
    bad.write_text("tokens,ms\n1,2\n")
    from sim.foundation.errors import UserError
    with pytest.raises(UserError, match="tokens, step_ms"):
        TableStepModel.from_csv(bad)


def test_shipped_table_preset_runs():
    from sim.experiments.runner import simulate

    res = simulate("default", queries=200, policies="uniform",
                   overrides={"engine.preset": "llama-3.1-8b-h100-eager-table"})
    assert res.summary["results"][0]["n_served"] == 200


def test_weighted_quantiles_equal_the_expanded_sample():
    rng = np.random.default_rng(0)
    v = rng.exponential(1.0, 200)
    w = rng.integers(0, 30, 200)
    got = weighted_stats_ms(v, w)
    want = stats_ms(np.repeat(v, w))
    for k in ("mean", "median", "p90", "p99"):
        assert got[k] == pytest.approx(want[k], rel=1e-12)


def test_goodput_counts_requests_meeting_every_limit():
    ttft = np.array([0.1, 0.5, 0.1, 0.1])
    tpot = np.array([0.01, 0.01, 0.05, np.nan])  # the last has one token: no TPOT
    e2e = np.array([1.0, 1.0, 1.0, 0.2])
    assert goodput(ttft, tpot, e2e, None).tolist() == [True] * 4
    assert goodput(ttft, tpot, e2e, {"ttft_ms": 200, "tpot_ms": 20, "e2el_ms": None}).tolist() == \
        [True, False, False, True]


def test_run_writes_timeseries_and_vllm_bench_metrics(tmp_path):
    from sim.experiments.runner import run

    res = run("default", out=tmp_path / "r", queries=300, policies="uniform,clear-windowed",
              overrides={"slo": {"ttft_ms": 500.0, "tpot_ms": None, "e2el_ms": None},
                         "engine.timeseries_s": 0.5})
    ts = pd.read_parquet(tmp_path / "r" / "timeseries.parquet")
    assert set(ts.columns) >= {"policy", "t_s", "replica", "running", "waiting", "kv_blocks", "kv_use"}
    assert set(ts["policy"]) == {"uniform", "clear-windowed"}
    one = ts[ts["policy"] == "uniform"]
    assert np.allclose(np.diff(one["t_s"]), 0.5) and one["running"].max() > 0
    assert (one["kv_use"] > 0).any() and (one["kv_use"] < 1).all()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    for r in summary["results"]:
        for k in ("itl_ms", "ttft_ms", "tpot_ms", "e2el_ms", "queue_wait_ms"):
            assert set(r[k]) == {"mean", "median", "p90", "p99"}
        assert 0 <= r["slo_attainment"] <= 1 and r["request_goodput"] <= r["request_throughput"]
    q = res.queries[res.queries["policy"] == "uniform"]
    # Little's law on the run: time-average requests in the engine = summed engine sojourns.
    served = q[~q["abandoned"]]
    ready = served["decision_s"] + 0.0046803  # the preset's CPU overhead before the queue
    area = float((one["running"] + one["waiting"]).sum() * 0.5)
    assert area == pytest.approx(float((served["finish_s"] - ready).sum()), rel=0.03)


def test_bad_engine_flags_are_user_errors(tmp_path):
    from sim.foundation.errors import UserError
    from sim.experiments.runner import simulate

    with pytest.raises(UserError, match="max_num_batched_tokens"):
        simulate("default", queries=10, overrides={"engine.max_num_batched_tokens": 64})
    with pytest.raises(UserError, match="kv_blocks"):
        simulate("default", queries=50, policies="uniform", budget=2000,
                 overrides={"engine.kv_blocks": 20})


RUN = "RTXPRO6000_Llama-3.1-8B_tp1"


def test_calibrate_reproduces_a_real_vllm_run(shared_data):
    """The published target: median E2E and mean TPOT within 15% (fit budget kept small)."""
    from sim.experiments.calibrate import calibrate

    res = calibrate(shared_data / "serving" / "vllm_runs" / RUN, max_evals=40)
    assert res["target"]["within_15pct"], res["target"]
    assert {r["metric"] for r in res["rows"]} == {"ttft", "tpot", "e2e"}
    f = res["fitted"]
    assert 3_000 < f["c0_us"] < 30_000 and f["c2_us"] > 0  # physically sensible (ANALYSIS.md)


def test_calibrate_cli_json_and_errors(shared_data, capsys, tmp_path):
    from sim.experiments.cli import main

    assert main(["calibrate", str(shared_data / "serving" / "vllm_runs" / RUN), "--json",
                 "--max-evals", "5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == RUN and len(out["rows"]) == 9
    assert main(["calibrate", str(tmp_path)]) == 2
    assert "requests.jsonl" in capsys.readouterr().err


def test_replay_of_a_kv_bound_run_preempts_like_vllm(shared_data):
    """The RTX 4090 run is KV-bound (2,588 blocks): the replay must hold at most that many
    blocks, preempt, and keep about as many requests running as vLLM did (mean ~32)."""
    from sim.experiments.calibrate import engine_for, load_run, replay
    from sim.core.stepmodels import LinearStepModel

    run = load_run(shared_data / "serving" / "vllm_runs" / "RTX4090_Llama-3.1-8B_tp1")
    assert run.flags["kv_blocks"] == 2588
    sim = replay(run, engine_for(run, LinearStepModel(0.01486, 98.5e-6, 228.6e-6)))
    assert sim["preemptions"].sum() > 0
    assert np.nanmedian(sim["e2e"]) == pytest.approx(np.median(run.e2e_s), rel=0.15)
