"""The engine reduced to textbook queues matches their closed forms within 3%.

Method.  Requests get 1-token prompts and every step costs c0 whatever the batch holds, so a
request of g tokens is served in exactly g steps (its prefill step makes its first token).
Each test runs the engine on R independent replications (seeds) and estimates the mean wait
with a 99% confidence interval; it asserts (1) the interval's half-width is below 3% of the
closed form (the test has the power to see a 3% error; sizes were chosen from the measured
spread, about 4-11 / sqrt(N) relative per query) and (2) the estimate is within 3% of it.

Queue waits vary a lot from run to run, so the engine's replications alone would need
millions of queries for that power.  The estimate therefore uses a control variate: the
textbook recursion of the same queue (Lindley for one server, Kiefer-Wolfowitz for c) is
run on the *same* arrivals and lengths as the engine, and
E[engine] = E[engine - recursion] (engine replications: tiny spread) + E[recursion] (many
cheap extra replications).  An engine that departs from the textbook queue shifts the first
term; an engine that matches it pathwise inherits the recursion's agreement with theory.
Little's law is checked on every engine run.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from queueing import (
    assert_little,
    assert_within,
    cfg_for,
    combined_estimate,
    erlang_c_wait,
    fcfs_waits,
    mean_ci,
    run_queue,
)

from sim.core.engine import sample_timeseries

C0 = 0.01  # seconds per step
MEAN_TOKENS = 100  # E[g]: mean service = 1 s


def _poisson(rng, lam, n):
    return np.cumsum(rng.exponential(1.0 / lam, n))


def _wait_estimate(draw, cfg, *, seeds: int, n: int, extra: int, c: int = 1):
    """Engine and recursion waits on ``seeds`` shared paths, recursion alone on ``extra`` more.
    ``draw(rng, n)`` returns (arrival times, lengths in tokens)."""
    eng, same, more = [], [], []
    for seed in range(seeds):
        arr, g = draw(np.random.default_rng(seed), n)
        rec, reps = run_queue(arr, g, cfg)
        assert_little(rec, reps, arr)
        w_eng, w_rec = rec.scheduled_s - arr, fcfs_waits(arr, g * C0, c)
        # Pathwise: one server is exactly Lindley's queue; with c servers the router compares
        # work left in whole tokens, so a start may differ by at most a step.
        assert np.abs(w_eng - w_rec).max() <= (1e-9 if c == 1 else C0)
        eng.append(float(np.mean(w_eng)))
        same.append(float(np.mean(w_rec)))
    for seed in range(10_000, 10_000 + extra):
        arr, g = draw(np.random.default_rng(seed), n)
        more.append(float(np.mean(fcfs_waits(arr, g * C0, c))))
    return eng, same, more


def test_md1_waiting_time_matches_pollaczek_khinchine():
    """Batch size 1, every request 100 tokens: M/D/1, Wq = rho D / (2 (1 - rho))."""
    D, rho = MEAN_TOKENS * C0, 0.5
    lam = rho / D

    def draw(rng, n):
        return _poisson(rng, lam, n), np.full(n, MEAN_TOKENS)

    eng, same, more = _wait_estimate(draw, cfg_for(C0, sample_s=D), seeds=6, n=10_000, extra=60)
    theory = rho * D / (2 * (1 - rho))
    assert_within(combined_estimate(eng, same, more), theory)
    # The engine alone agrees too, at its own (wider) interval.
    m, h = mean_ci(eng, 0.99)
    assert abs(m - theory) <= h + 0.03 * theory


def test_mg1_waiting_time_matches_pollaczek_khinchine():
    """Batch size 1, geometric lengths (p = 1/100): M/G/1, Wq = lambda E[S^2] / (2 (1 - rho))
    with S = g c0, E[g] = 1/p, E[g^2] = (2 - p) / p^2."""
    p = 1.0 / MEAN_TOKENS
    es, es2 = C0 / p, C0 ** 2 * (2 - p) / p ** 2
    rho = 0.5
    lam = rho / es

    def draw(rng, n):
        return _poisson(rng, lam, n), rng.geometric(p, n)

    eng, same, more = _wait_estimate(draw, cfg_for(C0, sample_s=es), seeds=6, n=10_000, extra=80)
    assert_within(combined_estimate(eng, same, more), lam * es2 / (2 * (1 - rho)))


def test_c_replicas_with_exponential_service_match_erlang_c():
    """c = 4 replicas of batch size 1, geometric (memoryless) lengths, least-loaded routing: the
    router sends each request to the replica with the least work left, which gives exactly the
    start times of one FCFS queue feeding c servers, so the mean wait is Erlang C's
    C(c, a) / (c mu - lambda).  (Geometric lengths have CV^2 = 1 - p = 0.99, which moves the
    M/G/c wait by about (1 + CV^2)/2 - 1 = -0.5%.)"""
    p = 1.0 / MEAN_TOKENS
    es = C0 / p
    c, rho = 4, 0.6
    lam = rho * c / es

    def draw(rng, n):
        return _poisson(rng, lam, n), rng.geometric(p, n)

    cfg = cfg_for(C0, replicas=c, routing="least-loaded", sample_s=es)
    eng, same, more = _wait_estimate(draw, cfg, seeds=6, n=10_000, extra=120, c=c)
    assert_within(combined_estimate(eng, same, more), erlang_c_wait(lam, es, c))


def test_mginf_sojourn_is_service_time_and_occupancy_is_poisson():
    """Unlimited batch and a constant step time: nobody waits for a slot (M/G/infinity), so the
    sojourn is the service time g c0 (plus < c0 to reach the next step boundary when the engine
    is busy: 0.5% here), and the number running while arrivals go on is Poisson(lambda E[S]):
    its mean is lambda E[S] and its variance equals its mean."""
    p = 1.0 / MEAN_TOKENS
    c0 = 0.001
    es = c0 / p  # 0.1 s
    lam = 200.0  # 20 in service on average
    soj, occ_mean, occ_disp = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(200 + seed)
        n = 10_000
        g = rng.geometric(p, n)
        arr = _poisson(rng, lam, n)
        rec, reps = run_queue(arr, g, cfg_for(c0, seqs=100_000, sample_s=es / 2))
        assert (rec.scheduled_s - arr < c0 + 1e-12).all()  # at most one step to wait
        np.testing.assert_allclose(rec.finish_s - rec.scheduled_s, g * c0, rtol=1e-9)
        soj.append(float(np.mean(rec.finish_s - arr)))
        ts = sample_timeseries(reps)
        # Stationary part: after a warm-up of 10 mean services, before the last arrival.
        keep = (ts["t_s"] > 10 * es) & (ts["t_s"] < arr[-1])
        running = ts["running"][keep].astype(float)
        occ_mean.append(float(running.mean()))
        occ_disp.append(float(running.var() / running.mean()))
        assert_little(rec, reps, arr)
    assert_within(mean_ci(soj, 0.99), es)
    assert_within(mean_ci(occ_mean, 0.99), lam * es)
    # The dispersion index of ~900 correlated samples per run is noisier: 99% interval, 10%.
    assert_within(mean_ci(occ_disp, 0.99), 1.0, rel=0.10)


def test_erlang_c_formula_itself():
    # M/M/1 special case: Wq = rho / (mu - lambda); and a textbook M/M/2 value.
    assert math.isclose(erlang_c_wait(0.5, 1.0, 1), 0.5 / (1 - 0.5))
    assert math.isclose(erlang_c_wait(1.0, 1.0, 2), 1 / 3)  # a = 1, c = 2: C = 1/3, Wq = C/(2-1)
