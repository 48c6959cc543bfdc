"""clear-posted's per-arrival path through the runner (``Policy.allocate_one``,
``sim.core.allocation._each_arrival``) gives the rows the generic path (a one-query view per
arrival, ``allocate``) gives, and a decision's outcome lookups index its group only."""

from __future__ import annotations

import numpy as np
import pytest

from policies.clear_posted import ClearPosted
from sim.core.workload import build_workload
from sim.experiments.runner import load_traces, resolve, simulate
from sim.experiments.scenario import load_scenario

POSTED = [{"name": "clear-posted", "leftover": "spread"},
          {"name": "clear-posted", "label": "posted-nil", "leftover": "next-in-line",
           "history": 7}]

CASES = {
    "hard-cap": ("default", {"arrivals.queries": 500}),
    "least-loaded": ("default", {"arrivals.queries": 500, "arrivals.rate": 90,
                                 "engine.replicas": 3, "engine.routing": "least-loaded"}),
    "token-rate": ("default", {"arrivals.queries": 500, "budget_utilisation": 0.5}),
    "forced-answer": ("reasoning-7b-forced", {"arrivals.queries": 150}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_per_arrival_path_gives_the_generic_paths_rows(case, monkeypatch):
    name, ov = CASES[case]
    policies = [dict(p, b_max=32768) for p in POSTED] if "reasoning" in name else POSTED
    sc = load_scenario(name, {**ov, "policies": policies})
    fast = simulate(sc)
    monkeypatch.setattr(ClearPosted, "allocate_one", None)  # the runner asks allocate()
    slow = simulate(sc)
    assert fast.queries.equals(slow.queries)  # exact, NaN-aware
    assert fast.summary == slow.summary
    assert (fast.queries.budget > 0).any() and (fast.queries.budget == 0).any()


@pytest.mark.parametrize("outcomes", ["empirical", "fitted"])
def test_outcome_lookups_of_a_group_are_the_runs_rows(outcomes):
    sc = resolve("default", queries=300)
    sc["traces"]["outcomes"] = outcomes
    wl = build_workload(load_traces(sc), n_queries=300, rate=40.0, mix=sc["traces"]["mix"],
                        predictor=sc["predictor"], seed=3, spec=sc["traces"],
                        arrivals=sc["arrivals"])
    idx = np.array([7, 3, 299, 3])
    assert np.array_equal(wl.needed_of(idx), wl.tokens_needed[idx])
    assert np.array_equal(wl.correct_of(idx), wl.sample_correct[idx])
    caps = np.array([0, 50, 400, 5000])
    assert np.array_equal(wl.generated_tokens(idx, caps),
                          np.maximum(np.minimum(caps, wl.tokens_needed[idx]), 1))
