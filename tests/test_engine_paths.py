"""The runner's fast paths (decisions made ahead, requests fed to replicas by time, replicas
computing ahead to the next decision) give the naive step-by-step scheduler's timestamps, on
every policy timing, at high load, with 16 replicas, and at reasoning lengths with preemption."""

import numpy as np
import pytest

from sim.core.engine import EngineConfig, LinearStepModel
from sim.core.presets import presets, step_model
from sim.experiments.runner import engine_config, resolve, simulate
from tests.test_engine import reference, run_engine


def _check_each_replica(q, cfg):
    """Each replica's requests, replayed through the reference from their decision times."""
    served = q[~q["abandoned"]]
    assert len(served) > 0
    for r in sorted(served["replica"].unique()):
        mine = served[served["replica"] == r]
        sched, first, finish, pre = reference(mine["decision_s"].tolist(),
                                              mine["prompt_tokens"].tolist(),
                                              mine["tokens_generated"].tolist(), cfg)
        np.testing.assert_allclose(mine["scheduled_s"], sched, rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine["first_token_s"], first, rtol=0, atol=1e-9)
        np.testing.assert_allclose(mine["finish_s"], finish, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(mine["preemptions"], pre)


@pytest.mark.parametrize("policy,replicas,routing", [
    ("uniform", 1, "round-robin"),          # decided ahead, vectorised (allocate_each)
    ("uniform", 16, "round-robin"),
    ("clear-windowed", 16, "round-robin"),  # decided ahead, window groups
    ("uniform", 4, "least-loaded"),         # live dispatch: replicas stop at each decision
    ("clear-posted", 4, "round-robin"),     # feedback: decisions live, in time order
])
def test_pipeline_matches_the_naive_scheduler_at_high_load(policy, replicas, routing):
    n = 400 if policy == "clear-posted" else 1500
    spec = {"name": policy, "window_s": 0.5} if policy == "clear-windowed" else policy
    sc = resolve("default", queries=n, seed=3,
                 overrides={"engine.replicas": replicas, "engine.routing": routing,
                            "engine.kv_blocks": 900, "arrivals.rate": 75.0 * replicas,
                            "policies": [spec]})
    res = simulate(sc)
    q = res.queries
    util = res.summary["results"][0]["gpu_utilisation"]
    assert util > 0.7  # high load: the batch changes at almost every step
    cfg = engine_config(sc["engine"])
    _check_each_replica(q, cfg)
    if routing == "round-robin":
        served = q[~q["abandoned"]].sort_values(["decision_s", "query_id"], kind="stable")
        assert served["replica"].nunique() == replicas


def test_reasoning_lengths_with_preemption_match_the_naive_scheduler():
    """16k-32k-token outputs on the 32B/H200 preset's step model (context term on), with a KV
    cache a few runs deep (scaled down ten-fold so the reference stays quick): preemption and
    recompute happen, and every timestamp is the reference's."""
    pre = presets()["r1-distill-qwen-32b-h200"]
    step = step_model(pre)
    assert isinstance(step, LinearStepModel) and step.c3_s > 0
    rng = np.random.default_rng(11)
    n = 24
    arrivals = np.cumsum(rng.exponential(20.0, n))
    prompts = rng.integers(50, 400, n)
    gens = rng.integers(16_000, 32_000, n)
    cfg = EngineConfig(step=step, max_num_seqs=16, max_num_batched_tokens=2048,
                       request_overhead_s=pre["request_overhead_us"] * 1e-6,
                       kv_blocks=(32_768 * 3) // 16, replicas=1)
    rec, reps = run_engine(arrivals, prompts, gens, cfg)
    sched, first, finish, preempt = reference(arrivals.tolist(), prompts.tolist(), gens.tolist(), cfg)
    assert preempt.sum() > 0
    np.testing.assert_allclose(rec.scheduled_s, sched, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, first, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.finish_s, finish, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(rec.preemptions, preempt)
    # Closed form: far fewer engine events than tokens.
    assert reps[0].steps >= gens.max()


@pytest.mark.parametrize("kv_blocks,sample_s", [(None, None), (60, 0.05)])
def test_run_ahead_gives_the_simpy_process_bytes_and_exact_kv_counts(kv_blocks, sample_s):
    """A replica served without SimPy (``ahead=True``, :meth:`Replica.run_ahead`) follows the
    SimPy process's clock arithmetic: the same bytes, not just 1e-9 s; and the KV blocks it
    keeps as counts of base mod block_size equal the per-decoder sum at every sample."""
    import simpy

    from sim.core.engine import Recorder, Replica

    rng = np.random.default_rng(5)
    n = 300
    at = np.cumsum(rng.exponential(0.01, n))
    prompts = rng.integers(5, 300, n)
    gens = rng.integers(1, 200, n)
    cfg = EngineConfig(step=LinearStepModel(0.007, 20e-6, 25e-6, 0.02e-6), max_num_seqs=32,
                       max_num_batched_tokens=512, request_overhead_s=0.003,
                       kv_blocks=kv_blocks, sample_s=sample_s)
    out = []
    for ahead in (False, True):
        env = simpy.Environment()
        rec = Recorder(n)
        rep = Replica(env, cfg, prompts, gens, rec, ahead=ahead,
                      external=None if ahead else (lambda: float("inf")))
        rep.dispatch(np.arange(n), at)
        if ahead:
            rep.run_ahead()
        else:
            env.run()
        out.append((rec, rep))
    (r0, p0), (r1, p1) = out
    for name in ("scheduled_s", "first_token_s", "finish_s", "preemptions"):
        assert getattr(r0, name).tobytes() == getattr(r1, name).tobytes()
    assert p0.busy_s == p1.busy_s and p0.steps == p1.steps
    assert bytes(p0.ts_kv) == bytes(p1.ts_kv) and bytes(p0.ts_t) == bytes(p1.ts_t)
    if kv_blocks:
        assert r1.preemptions.sum() > 0 and max(p1.ts_kv) > 0
    sched, first, finish, pre = reference(at.tolist(), prompts.tolist(), gens.tolist(), cfg)
    np.testing.assert_allclose(r1.finish_s, finish, rtol=0, atol=1e-9)


def test_kv_counts_equal_the_per_decoder_sum():
    """``_dec_blocks`` from the residue counts against the plain sum over decoders, at
    several offsets, on a replica stopped mid-run."""
    import simpy

    from sim.core.engine import Recorder, Replica

    rng = np.random.default_rng(2)
    n = 80
    cfg = EngineConfig(step=LinearStepModel(0.007, 20e-6, 25e-6), kv_blocks=10_000)
    env = simpy.Environment()
    rep = Replica(env, cfg, rng.integers(5, 300, n), rng.integers(50, 400, n), Recorder(n))
    rep.dispatch(np.arange(n), np.sort(rng.uniform(0, 0.5, n)))
    env.run(until=0.6)
    assert len(rep._dec) > 10
    bases = np.array([v[0] for v in rep._dec.values()])
    for ahead in (0, 1, 7, 16, 33):
        assert rep._dec_blocks(ahead) == int((-(-(bases + rep.off + ahead) // 16)).sum())
    assert rep._new_blocks() == int(((bases + rep.off) % 16 == 0).sum())


@pytest.mark.parametrize("replicas,routing,rate", [
    (16, "round-robin", 4.0),    # light load: most replicas skip most decisions
    (16, "round-robin", 60.0),   # heavy load: full batches, stretches past many decisions
    (4, "least-loaded", 30.0),   # every replica stops at every decision
    (1, "round-robin", 8.0),
])
def test_feedback_decisions_hear_exactly_the_completions_before_them(monkeypatch, replicas,
                                                                     routing, rate):
    """A feedback policy's decision at time T has heard of every request that finished by T and
    of none after, however far each replica computed ahead (replicas stop only at decisions
    that can reach them; completions are delivered at the decision, Recorder.flush)."""
    from policies.clear_posted import ClearPosted

    heard: list[float] = []  # finish times the policy was told of, in the order told
    at_decision: list[tuple[float, int, float]] = []  # (arrival, heard so far, latest heard)
    on_finished, allocate_one = ClearPosted.on_finished, ClearPosted.allocate_one

    def spy_finished(self, budgets, generated, now):
        heard.extend([now] * len(budgets))
        return on_finished(self, budgets, generated, now)

    def spy_allocate_one(self, tau, now, budget_tokens):  # the runner's per-arrival call
        at_decision.append((now, len(heard), max(heard, default=-1.0)))
        return allocate_one(self, tau, now, budget_tokens)

    monkeypatch.setattr(ClearPosted, "on_finished", spy_finished)
    monkeypatch.setattr(ClearPosted, "allocate_one", spy_allocate_one)
    sc = resolve("default", queries=600, seed=4,
                 overrides={"engine.replicas": replicas, "engine.routing": routing,
                            "arrivals.rate": rate * replicas, "policies": ["clear-posted"]})
    q = simulate(sc).queries
    finish = np.sort(q["finish_s"].to_numpy()[~q["abandoned"].to_numpy()])
    assert len(at_decision) == len(q) and len(finish) > 100
    for t, n_heard, latest in at_decision:
        assert n_heard == np.searchsorted(finish, t, side="right")  # all finished by t ...
        assert latest <= t  # ... and nothing later
    assert sorted(heard) == heard  # told in time order
    assert len(heard) == len(finish)  # and, by the end, of every completion


def test_windowed_feedback_decisions_hear_exactly_the_completions_before_them(monkeypatch):
    """The same for a feedback policy deciding groups (clear-windowed with carry_over: unused,
    16 replicas round-robin): a replica's horizon counts a window's queries, not one each."""
    from policies.clear import ClearWindowed

    heard: list[float] = []
    calls: list[tuple[int, float]] = []  # (heard so far, latest heard) at each decision
    on_finished, allocate = ClearWindowed.on_finished, ClearWindowed.allocate

    def spy_finished(self, budgets, generated, now):
        heard.extend([now] * len(budgets))
        return on_finished(self, budgets, generated, now)

    def spy_allocate(self, view, budget_tokens):
        calls.append((len(heard), max(heard, default=-1.0)))
        return allocate(self, view, budget_tokens)

    monkeypatch.setattr(ClearWindowed, "on_finished", spy_finished)
    monkeypatch.setattr(ClearWindowed, "allocate", spy_allocate)
    spec = {"name": "clear-windowed", "window_s": 0.25, "carry_over": "unused"}
    sc = resolve("default", queries=800, seed=5,
                 overrides={"engine.replicas": 16, "arrivals.rate": 3.0 * 16,
                            "policies": [spec]})
    q = simulate(sc).queries
    times = np.unique(q["decision_s"].to_numpy())  # one decision per window, in time order
    finish = np.sort(q["finish_s"].to_numpy()[~q["abandoned"].to_numpy()])
    assert len(calls) == len(times) > 20 and len(finish) > 100
    for t, (n_heard, latest) in zip(times, calls):
        assert n_heard == np.searchsorted(finish, t, side="right") and latest <= t
    assert sorted(heard) == heard and len(heard) == len(finish)
    # and replicas that skipped decisions still served each request as the naive loop does
    _check_each_replica(q, engine_config(sc["engine"]))
