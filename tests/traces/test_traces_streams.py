"""Difficulty pools and the paper's four streams: exact proportions, no repeats, validation."""

import numpy as np
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from sim.foundation.errors import UserError
from sim.experiments.runner import load_traces, resolve, simulate
from sim.experiments.scenario import load_scenario, resolve_scenario_path
from sim.core.workload import build_workload
from traces.curves import true_tau
from traces.pools import POOLS, STREAMS, draw_stream, pool_of, stream_counts

PAPER = {"paper-balanced": "balanced", "paper-mostlyeasy": "mostlyeasy",
         "paper-mostlyhard": "mostlyhard", "paper-ushaped": "ushaped"}


def test_pool_edges_are_inclusive_and_never_solved_is_hard():
    tau = np.array([0, 400, 400.5, 800, 801, np.inf])
    assert pool_of(tau).tolist() == [0, 0, 1, 1, 2, 2]
    assert pool_of(tau, (100, 1000)).tolist() == [0, 1, 1, 1, 1, 2]


def test_stream_counts_of_the_four_streams():
    got = {k: stream_counts(500, w).tolist() for k, w in STREAMS.items()}
    assert got == {"balanced": [167, 167, 166], "mostlyeasy": [250, 150, 100],
                   "mostlyhard": [100, 150, 250], "ushaped": [225, 50, 225]}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.lists(st.floats(0, 10), min_size=3, max_size=3).filter(
    lambda w: sum(w) > 1e-6))
def test_stream_counts_sum_to_n_and_round_each_share(n, w):
    weights = dict(zip(POOLS, w))
    c = stream_counts(n, weights)
    exact = n * np.array(w) / sum(w)
    assert c.sum() == n and np.all(np.abs(c - exact) < 1)


def test_draw_stream_without_replacement_when_the_pool_is_large_enough():
    pool = np.repeat([0, 1, 2], [10, 3, 50])
    rng = np.random.default_rng(0)
    q = draw_stream(pool, 20, {"easy": 0.5, "medium": 0.0, "hard": 0.5}, rng)
    assert np.bincount(pool[q], minlength=3).tolist() == [10, 0, 10]
    assert len(set(q.tolist())) == 20  # no query twice
    # the medium pool (3 queries) must repeat to give 10
    q = draw_stream(pool, 10, {"easy": 0, "medium": 1, "hard": 0}, rng)
    assert (pool[q] == 1).all() and len(set(q.tolist())) <= 3
    with pytest.raises(UserError, match="medium pool is empty"):
        draw_stream(np.zeros(5, int), 4, {"easy": 0.5, "medium": 0.5, "hard": 0}, rng)


@pytest.mark.parametrize("scenario", sorted(PAPER))
def test_paper_streams_have_exact_proportions_and_no_repeats(scenario):
    sc = resolve(scenario)
    assert sc["traces"]["stream"] == PAPER[scenario] and sc["arrivals"]["queries"] == 500
    assert all(s.startswith("qwen") for s in sc["traces"]["sets"])
    ts = load_traces(sc)
    wl = build_workload(ts, n_queries=500, rate=40, mix=None, predictor=sc["predictor"],
                        seed=3, spec=sc["traces"])
    counts = np.bincount(pool_of(true_tau(ts)[wl.query]), minlength=3)
    assert counts.tolist() == stream_counts(500, STREAMS[PAPER[scenario]]).tolist()
    assert len(set(wl.query.tolist())) == 500
    # the order is shuffled: pools are interleaved, not in blocks
    first = pool_of(true_tau(ts)[wl.query[:100]])
    assert len(set(first.tolist())) == 3


def test_pools_mapping_and_mix_within_pools(tmp_path):
    sc = resolve("paper-balanced")
    sc["traces"].update(stream=None, pools={"easy": 1, "hard": 3},
                        mix={"olympiadbench": 1, "gaokao2023en": 1, "math": 0,
                             "minerva_math": 0})
    ts = load_traces(sc)
    wl = build_workload(ts, n_queries=400, rate=40, mix=sc["traces"]["mix"],
                        predictor={"kind": "oracle", "sigma": 0.0}, seed=0, spec=sc["traces"])
    assert np.bincount(pool_of(wl.tau_true), minlength=3).tolist() == [100, 0, 300]
    assert set(wl.dataset.tolist()) <= {"olympiadbench", "gaokao2023en"}


@pytest.mark.parametrize("traces,field,text", [
    ({"stream": "balancd"}, "traces.stream", "did you mean 'balanced'"),
    ({"stream": "balanced", "pools": {"easy": 1}}, "traces.pools", "either"),
    ({"pools": {"easy": 1, "extreme": 1}}, "traces.pools.extreme", "unknown pool"),
    ({"pools": {"easy": -1}}, "traces.pools.easy", ">= 0"),
    ({"pools": {"easy": 0}}, "traces.pools", "sum to 0"),
    ({"pool_edges": [800, 400]}, "traces.pool_edges", "increasing"),
    ({"outcomes": "smooth"}, "traces.outcomes", "empirical, fitted"),
])
def test_bad_stream_fields_name_the_field(tmp_path, traces, field, text):
    raw = yaml.safe_load(resolve_scenario_path("paper-balanced").read_text())
    raw["traces"].pop("stream")
    raw["traces"].update(traces)
    raw["arrivals"]["queries"] = 20
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        simulate(str(path))
    msg = str(err.value)
    assert str(path) in msg and f"field '{field}'" in msg and text in msg, msg


def test_model_scenarios_serve_the_same_problems_in_the_same_order():
    a, b = load_scenario("model-qwen"), load_scenario("model-llama")
    wa = build_workload(load_traces(a), n_queries=300, rate=20, mix=None,
                        predictor=a["predictor"], seed=5)
    wb = build_workload(load_traces(b), n_queries=300, rate=20, mix=None,
                        predictor=b["predictor"], seed=5)
    assert (wa.query_id == wb.query_id).all() and np.array_equal(wa.arrival_s, wb.arrival_s)
    assert (wa.prompt_tokens == wb.prompt_tokens).all()
    # same noise draw: where both models solved a query, the predictions differ only by tau
    both = np.isfinite(wa.tau_true) & np.isfinite(wb.tau_true)
    np.testing.assert_allclose((wa.tau_pred / wa.tau_true)[both], (wb.tau_pred / wb.tau_true)[both])
    assert a["traces"]["sets"] != b["traces"]["sets"]
