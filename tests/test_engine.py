"""The continuous-batching replica: exact step arithmetic, and closed-form advance against a
plain step-by-step reference loop."""

import numpy as np
import pytest
import simpy

from sim.engine import EngineConfig, LinearStepModel, Recorder, Replica, Router

STEP = LinearStepModel(c0_s=0.007, c1_s=20e-6, c2_s=25e-6)


def run_engine(arrivals, prompts, gens, cfg):
    """Dispatch request i at arrivals[i]; return the recorder and the replicas."""
    env = simpy.Environment()
    n = len(arrivals)
    rec = Recorder(n)
    gen = np.asarray(gens, dtype=np.int64)
    reps = [Replica(env, cfg, np.asarray(prompts), gen, rec, r) for r in range(cfg.replicas)]
    router = Router(reps, cfg.routing)

    def feeder():
        for i, t in enumerate(arrivals):
            if t > env.now:
                yield env.timeout(t - env.now)
            router.dispatch(np.array([i]))

    env.process(feeder())
    env.run()
    return rec, reps


def reference(arrivals, prompts, gens, cfg):
    """A naive scheduler loop, one iteration per step, same rules as the engine's docstring."""
    n = len(arrivals)
    ready = [a + cfg.request_overhead_s for a in arrivals]
    order = sorted(range(n), key=lambda i: (ready[i], i))
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    sched = np.full(n, np.nan)
    t, nxt, waiting, running = 0.0, 0, [], {}
    while nxt < n or waiting or running:
        while nxt < n and ready[order[nxt]] <= t + 1e-12:
            waiting.append(order[nxt])
            nxt += 1
        if not waiting and not running:
            t = ready[order[nxt]]
            continue
        new, tokens = [], 0
        while waiting and len(running) + len(new) < cfg.max_num_seqs:
            p = prompts[waiting[0]]
            if new and tokens + p > cfg.max_num_batched_tokens:
                break
            new.append(waiting.pop(0))
            tokens += p
        for i in new:
            sched[i] = t
        t += cfg.step.step_s(tokens, len(running))
        for i in list(running):
            running[i] -= 1
            if running[i] == 0:
                finish[i] = t
                del running[i]
        for i in new:
            first[i] = t
            if gens[i] - 1 == 0:
                finish[i] = t
            else:
                running[i] = gens[i] - 1
    return sched, first, finish


def test_single_request_latency_is_prefill_plus_decode_steps():
    cfg = EngineConfig(step=STEP, request_overhead_s=0.004)
    rec, reps = run_engine([1.0], [120], [50], cfg)
    prefill = STEP.c0_s + STEP.c1_s * 120
    decode = STEP.c0_s + STEP.c2_s * 1
    assert rec.first_token_s[0] == pytest.approx(1.0 + 0.004 + prefill, abs=1e-12)
    assert rec.finish_s[0] == pytest.approx(1.0 + 0.004 + prefill + 49 * decode, abs=1e-9)
    assert reps[0].steps == 50 and reps[0].busy_s == pytest.approx(prefill + 49 * decode)


def test_one_token_request_finishes_at_its_prefill():
    rec, _ = run_engine([0.0], [10], [1], EngineConfig(step=STEP))
    assert rec.finish_s[0] == rec.first_token_s[0] == pytest.approx(STEP.step_s(10, 0))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_seqs,max_tokens", [(4, 8192), (64, 300), (256, 8192)])
def test_closed_form_matches_step_by_step_reference(seed, max_seqs, max_tokens):
    rng = np.random.default_rng(seed)
    n = 300
    arrivals = np.cumsum(rng.exponential(0.02, n))
    arrivals[50:60] = arrivals[50]  # a simultaneous burst
    prompts = rng.integers(10, 400, n)
    gens = rng.integers(1, 300, n)
    cfg = EngineConfig(step=STEP, max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens,
                       request_overhead_s=0.003)
    rec, _ = run_engine(arrivals, prompts, gens, cfg)
    sched, first, finish = reference(arrivals.tolist(), prompts.tolist(), gens.tolist(), cfg)
    np.testing.assert_allclose(rec.scheduled_s, sched, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, first, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.finish_s, finish, rtol=0, atol=1e-9)


def test_running_batch_never_exceeds_max_num_seqs():
    rng = np.random.default_rng(3)
    n = 200
    cfg = EngineConfig(step=STEP, max_num_seqs=8)
    rec, _ = run_engine(np.zeros(n), rng.integers(10, 50, n), rng.integers(5, 100, n), cfg)
    events = sorted([(s, 1) for s in rec.scheduled_s] + [(f, -1) for f in rec.finish_s],
                    key=lambda e: (e[0], e[1]))
    live = np.cumsum([d for _, d in events])
    assert live.max() == 8


def test_round_robin_and_least_loaded_spread_requests():
    n = 12
    cfg = EngineConfig(step=STEP, replicas=3, routing="round-robin")
    rec, _ = run_engine(np.arange(n) * 0.001, [20] * n, [10] * n, cfg)
    assert rec.replica.tolist() == [0, 1, 2] * 4
    gens = [1000, 10, 10, 10, 10, 10]
    cfg = EngineConfig(step=STEP, replicas=2, routing="least-loaded")
    rec, _ = run_engine(np.arange(6) * 0.001, [20] * 6, gens, cfg)
    assert rec.replica[0] == 0 and (rec.replica[1:] == 1).all()
