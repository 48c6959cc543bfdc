"""Early exit inside a simulated run: the request's decode length is its exit length (the
engine frees its slot and KV at the exit), probe answer tokens are generated tokens and GPU
time, queries.parquet records the exit, policies never see probes, same seed same bytes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from policies.base import REGISTRY, RunContext
from sim.core.early_exit import ExitRule, Probes, expected_accuracy, outcomes
from sim.core.engine import EngineConfig
from sim.experiments.runner import simulate_policy
from sim.foundation.spec import check
from sim.core.stepmodels import LinearStepModel
from sim.core.workload import Workload
from probed import probed_traces

C0, C2 = 0.010, 0.001  # 10 ms per step, 1 ms per decoding sequence; no prefill cost


def _cfg(max_num_seqs=8):
    return EngineConfig(step=LinearStepModel(C0, 0.0, C2), max_num_seqs=max_num_seqs,
                        max_num_batched_tokens=max(64, max_num_seqs))


def _policy(name, target, n, **params):
    cls = REGISTRY[name]
    return cls(check(params, cls.PARAMS, where=None), RunContext(target, 0.005, n))


def _workload(ts, arrival):
    n = len(arrival)
    q = np.arange(n) % ts.n_queries
    return Workload(ts, np.asarray(arrival, float), q, ts.offsets[q], np.full(n, 500.0))


def test_exit_length_is_the_decode_length_and_frees_the_slot():
    # query 0 agrees at probes 2-4 (exit at 256 with k=3), query 1 never agrees
    ts = probed_traces([[(1000, True, [5, 7, 7, 7, 7, 7, 7])], [(600, False, list(range(1, 10)))]],
                       out_tokens=6)
    wl = _workload(ts, [0.0, 0.0])
    rows, busy = simulate_policy(_policy("early-exit", 2000, 2, k=3), wl, _cfg(1), 2000)
    r = rows.set_index("query_id")
    assert r.loc["q0", "exited"] and r.loc["q0", "exit_position"] == 256
    assert r.loc["q0", "probe_tokens"] == 4 * 6
    assert r.loc["q0", "tokens_generated"] == 256 + 24
    assert not r.loc["q1", "exited"] and r.loc["q1", "exit_position"] == -1
    # q1 took the probes at 64..576 (9 of them, position < its 600 tokens)
    assert r.loc["q1", "probe_tokens"] == 9 * 6 and r.loc["q1", "tokens_generated"] == 600 + 54
    # one slot: q1 starts when q0 exits; a request's first token comes from its prefill step
    # (c0: no prompt here), each later token from a decode step of one sequence (c0 + c2)
    step = C0 + C2
    t0 = C0 + 279 * step
    assert r.loc["q0", "finish_s"] == pytest.approx(t0)
    assert r.loc["q1", "scheduled_s"] == pytest.approx(t0)
    assert r.loc["q1", "finish_s"] == pytest.approx(t0 + C0 + 653 * step)
    assert busy == pytest.approx(t0 + C0 + 653 * step)


def test_finish_equals_a_plain_run_of_the_exit_length():
    """With KV limits and a shared batch, an exiting request finishes exactly when a request
    capped at its exit length would: the engine holds nothing beyond the exit."""
    rng = np.random.default_rng(3)
    runs = []
    for i in range(12):
        n = int(rng.integers(5, 30))
        answers = rng.integers(-1, 3, size=n).tolist()
        runs.append([(64 * n + 10, bool(i % 2), answers)])
    ts = probed_traces(runs, out_tokens=4)
    wl = _workload(ts, np.sort(rng.uniform(0, 2, 12)))
    cfg = EngineConfig(step=LinearStepModel(C0, 1e-5, C2, 1e-7), max_num_seqs=4,
                       max_num_batched_tokens=512, kv_blocks=400, block_size=16)
    ee, _ = simulate_policy(_policy("early-exit", 4000, 12, k=2), wl, cfg, 4000)
    assert ee["exited"].any() and (~ee["exited"]).any()

    # the same arrivals, each needing exactly its exit length, under plain uniform caps
    need = ee["tokens_generated"].to_numpy()
    plain_wl = Workload(ts, wl.arrival_s, wl.query, wl.sample, wl.tau_pred, tokens=need,
                        correct=np.ones(12, bool))
    plain, _ = simulate_policy(_policy("uniform", 4000, 12), plain_wl, cfg, 4000)
    assert np.array_equal(plain["tokens_generated"], ee["tokens_generated"])
    assert np.allclose(plain["finish_s"], ee["finish_s"], rtol=0, atol=1e-9)
    assert np.allclose(plain["scheduled_s"], ee["scheduled_s"], rtol=0, atol=1e-9)


def test_scoring_and_token_accounting_match_the_rule():
    ts = probed_traces([[(900, True, [1, 1, 1]), (500, False, [2, 0, 0, 3])],
                        [(3000, True, [0, 1, 2, 0, 1, 2, 3, 3])]], out_tokens=3, right=1)
    wl = _workload(ts, [0.0, 0.1, 0.2])
    wl = Workload(ts, wl.arrival_s, np.array([0, 1, 0]), np.array([0, 2, 1]), wl.tau_pred)
    rows, _ = simulate_policy(_policy("early-exit", 400, 3, k=2), wl, _cfg(), 400)
    pr = Probes.of(ts)
    out = outcomes(pr, wl.sample, ts.sample_tokens[wl.sample], ts.sample_correct[wl.sample],
                   np.full(3, 400), ExitRule(2))
    assert rows["tokens_generated"].tolist() == out.tokens.tolist()
    assert rows["correct"].tolist() == out.correct.tolist() == [True, False, False]
    assert rows["probe_tokens"].sum() == out.probe_tokens.sum() > 0
    # expected accuracy: the mean over the query's recorded runs under the rule at its cap
    exp = expected_accuracy(pr, ts, wl.query, np.full(3, 400), ExitRule(2))
    assert rows["expected_accuracy"].tolist() == pytest.approx(exp.tolist())
    assert exp[0] == pytest.approx(0.5)  # run 1 exits on 1 (right), run 2 on 0 (wrong)


def test_clear_early_exit_keeps_clear_caps_and_exits_inside_them():
    runs = [[(64 * (j + 8), True, [1] * (j + 7))] for j in range(6)]
    ts = probed_traces(runs, out_tokens=2, right=1)
    wl = _workload(ts, np.linspace(0, 1, 6))
    wl = Workload(ts, wl.arrival_s, wl.query, wl.sample, ts.sample_tokens[wl.sample].astype(float))
    clear, _ = simulate_policy(_policy("clear", 300, 6, b_max=8192), wl, _cfg(), 300)
    both, _ = simulate_policy(_policy("clear+early-exit", 300, 6, k=2, b_max=8192), wl, _cfg(), 300)
    assert np.array_equal(clear["budget"], both["budget"])
    funded = both["budget"] > 128
    assert (both["exited"] == funded).all()
    assert (both.loc[funded, "tokens_generated"] == 128 + 4).all()
    assert both["tokens_generated"].sum() < clear["tokens_generated"].sum()


def test_policies_see_no_probes():
    ts = probed_traces([[(700, True, [1, 1])]], out_tokens=2)
    wl = _workload(ts, [0.0])
    view = wl.view(np.array([0]))
    assert not any("probe" in f for f in view.__dataclass_fields__)
    assert _policy("early-exit", 100, 1).exit_rule == ExitRule(3, False)
    assert REGISTRY["uniform"].exit_rule is None


def test_same_seed_same_bytes(tmp_path):
    rng = np.random.default_rng(0)
    runs = [[(int(rng.integers(300, 3000)), bool(rng.integers(2)),
              rng.integers(-1, 3, 40).tolist()) for _ in range(3)] for _ in range(10)]
    ts = probed_traces(runs, out_tokens=5)

    def once(path):
        s_arr, s_q = (np.random.default_rng(s) for s in np.random.SeedSequence(7).spawn(2))
        arrival = np.cumsum(s_arr.exponential(0.05, 60))
        q = s_q.integers(0, 10, 60)
        wl = Workload(ts, arrival, q, ts.offsets[q] + s_q.integers(0, 3, 60), np.full(60, 900.0))
        rows, _ = simulate_policy(_policy("clear+early-exit", 800, 60, k=2), wl, _cfg(), 800)
        rows.to_parquet(path)
        return path.read_bytes()

    assert once(tmp_path / "a.parquet") == once(tmp_path / "b.parquet")
    assert pd.read_parquet(tmp_path / "a.parquet")["exited"].any()
