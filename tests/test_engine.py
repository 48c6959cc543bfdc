"""The continuous-batching replica: exact step arithmetic, and closed-form advance against a
plain step-by-step reference loop."""

import numpy as np
import pytest
import simpy

from sim.core.engine import EngineConfig, LinearStepModel, Recorder, Replica, Router

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
    """A naive vLLM V1-style scheduler loop, one iteration per step, written independently of the
    engine from the rules in its docstring: chunked prefill under a token budget, KV blocks
    allocated per request before each step, preemption of the last running request with
    recompute of prompt + generated tokens, no admission in a step that preempted."""
    n = len(arrivals)
    bs = cfg.block_size
    cap = cfg.kv_blocks if cfg.kv_blocks is not None else float("inf")
    ready = [a + cfg.request_overhead_s for a in arrivals]
    order = sorted(range(n), key=lambda i: (ready[i], i))
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    sched = np.full(n, np.nan)
    preempt = np.zeros(n, dtype=int)
    out = [0] * n  # tokens emitted
    comp = [0] * n  # tokens computed (in KV)
    blocks = [0] * n
    t, nxt, waiting, running = 0.0, 0, [], []
    decoding = set()  # emitted a token since its last (re)prefill: one token per step
    used = 0
    while nxt < n or waiting or running:
        while nxt < n and ready[order[nxt]] <= t + 1e-12:
            waiting.append(order[nxt])
            nxt += 1
        if not waiting and not running:
            t = ready[order[nxt]]
            continue
        budget = cfg.max_num_batched_tokens
        scheduled = {}  # request -> tokens computed this step
        preempted = False
        pos = 0
        while pos < len(running) and budget > 0:
            i = running[pos]
            num = min(prompts[i] + out[i] - comp[i], budget)
            ok = True
            while True:
                want = -(-(comp[i] + num) // bs) - blocks[i]
                if used + want <= cap:
                    used += want
                    blocks[i] += want
                    break
                victim = running.pop()
                used -= blocks[victim]
                blocks[victim] = 0
                comp[victim] = 0
                decoding.discard(victim)
                waiting.insert(0, victim)
                preempt[victim] += 1
                preempted = True
                if victim == i:
                    ok = False
                    break
            if not ok:
                break
            scheduled[i] = num
            budget -= num
            pos += 1
        if not preempted:
            while waiting and len(running) < cfg.max_num_seqs and budget > 0:
                i = waiting[0]
                num = min(prompts[i] + out[i], budget)
                want = -(-num // bs)
                if used + want > cap:
                    break
                used += want
                blocks[i] = want
                waiting.pop(0)
                running.append(i)
                if np.isnan(sched[i]):
                    sched[i] = t
                scheduled[i] = num
                budget -= num
        decode = [i for i in scheduled if i in decoding]
        prefill = sum(v for i, v in scheduled.items() if i not in decode)
        ctx = sum(comp[i] + 1 for i in decode)
        t += cfg.step.step_s(prefill, len(decode), ctx)
        for i, num in scheduled.items():
            comp[i] += num
            if comp[i] == prompts[i] + out[i]:
                out[i] += 1
                decoding.add(i)
                if out[i] == 1:
                    first[i] = t
                if out[i] == gens[i]:
                    finish[i] = t
                    running.remove(i)
                    used -= blocks[i]
                    blocks[i] = 0
    return sched, first, finish, preempt


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
    sched, first, finish, _ = reference(arrivals.tolist(), prompts.tolist(), gens.tolist(), cfg)
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


CTX_STEP = LinearStepModel(c0_s=0.007, c1_s=20e-6, c2_s=10e-6, c3_s=0.02e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_seqs,max_tokens,kv_blocks,step", [
    (32, 256, None, STEP),      # chunked prefill: prompts span several steps
    (64, 512, 60, STEP),        # tight KV: admission blocked, preemption and recompute
    (256, 2048, 200, CTX_STEP),  # KV-bound with a context term (quadratic stretches)
    (16, 64, 48, CTX_STEP),     # everything at once
])
def test_chunked_prefill_kv_and_preemption_match_reference(seed, max_seqs, max_tokens, kv_blocks, step):
    rng = np.random.default_rng(100 + seed)
    n = 250
    arrivals = np.cumsum(rng.exponential(0.01, n))
    arrivals[30:45] = arrivals[30]
    prompts = rng.integers(1, 500, n)
    gens = rng.integers(1, 250, n)
    cfg = EngineConfig(step=step, max_num_seqs=max_seqs, max_num_batched_tokens=max_tokens,
                       request_overhead_s=0.002, kv_blocks=kv_blocks)
    rec, reps = run_engine(arrivals, prompts, gens, cfg)
    sched, first, finish, preempt = reference(arrivals.tolist(), prompts.tolist(), gens.tolist(), cfg)
    np.testing.assert_allclose(rec.scheduled_s, sched, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.first_token_s, first, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rec.finish_s, finish, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(rec.preemptions, preempt)
    if kv_blocks is not None and kv_blocks <= 60 and max_seqs > 16:
        assert preempt.sum() > 0  # the case really exercises preemption
    assert reps[0].kv_used == 0 and reps[0].outstanding_tokens == 0
    assert reps[0].running == 0 and not reps[0].waiting


def test_replicas_each_match_the_reference_on_their_share():
    rng = np.random.default_rng(7)
    n = 240
    arrivals = np.cumsum(rng.exponential(0.005, n))
    prompts = rng.integers(10, 300, n)
    gens = rng.integers(1, 200, n)
    cfg = EngineConfig(step=CTX_STEP, max_num_seqs=32, max_num_batched_tokens=512, replicas=3,
                       kv_blocks=120)
    rec, _ = run_engine(arrivals, prompts, gens, cfg)
    for r in range(3):
        mine = np.flatnonzero(rec.replica == r)
        assert len(mine) == n // 3
        sched, first, finish, _ = reference(arrivals[mine].tolist(), prompts[mine].tolist(),
                                            gens[mine].tolist(), cfg)
        np.testing.assert_allclose(rec.finish_s[mine], finish, rtol=0, atol=1e-9)
        np.testing.assert_allclose(rec.first_token_s[mine], first, rtol=0, atol=1e-9)


def test_a_request_larger_than_the_cache_is_refused():
    cfg = EngineConfig(step=STEP, kv_blocks=4)
    from sim.foundation.errors import UserError

    with pytest.raises(UserError, match="KV blocks"):
        run_engine([0.0], [60], [10], cfg)


def test_timeseries_sampling_and_littles_law_area():
    """Sampled every dt, the area under running + waiting approximates the summed sojourns:
    each request changes the count twice (join, leave), so the error is at most 2 n dt."""
    from sim.core.engine import sample_timeseries

    rng = np.random.default_rng(5)
    n, dt = 400, 0.002
    arrivals = np.cumsum(rng.exponential(0.01, n))
    gens = rng.integers(1, 200, n)
    cfg = EngineConfig(step=STEP, max_num_seqs=16, max_num_batched_tokens=256, kv_blocks=80,
                       sample_s=dt)
    rec, reps = run_engine(arrivals, rng.integers(10, 300, n), gens, cfg)
    ts = sample_timeseries(reps)
    assert np.allclose(np.diff(ts["t_s"]), dt) and ts["t_s"][-1] <= np.nanmax(rec.finish_s)
    assert ts["running"].max() <= 16 and 0 < ts["kv_blocks"].max() <= 80
    area = float(np.sum(ts["running"] + ts["waiting"]) * dt)
    assert abs(area - float(np.sum(rec.finish_s - arrivals))) <= 2 * n * dt
    # While the batch is full, the queue holds the rest: running + waiting = arrived - finished.
    k = len(ts["t_s"]) // 2
    at = ts["t_s"][k]
    assert ts["running"][k] + ts["waiting"][k] == np.sum(arrivals <= at) - np.sum(rec.finish_s <= at)
