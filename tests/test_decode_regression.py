"""Stage 1 of calibrate: the per-request decode-time regression (sim/experiments/decode_regression.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.core.stepmodels import LinearStepModel
from sim.experiments.calibrate import (
    GENERIC_START,
    RecordedRun,
    _timeseries_fit,
    engine_for,
    initial_fit,
    initial_fit_runs,
    replay,
    stats,
)
from sim.experiments.decode_regression import MIN_REQUESTS, decode_design, decode_fit

TRUE = (5e-3, 200e-6, 800e-6)  # c0 5 ms, c1 200 us/prefill token, c2 800 us/decoding sequence


def _brute(first, last, prompt, output, replicas=1, use=None):
    """The design by its definition, pair by pair: O(n^2)."""
    if use is None:
        use = (output >= 2) & (last > first)
    rows, ys = [], []
    for i in np.flatnonzero(use):
        a, b = first[i], last[i]
        p = sum(prompt[j] for j in range(len(first)) if j != i and a < first[j] <= b)
        d = 0.0
        for j in np.flatnonzero(use):
            if j != i:
                overlap = max(0.0, min(b, last[j]) - max(a, first[j]))
                d += (output[j] - 1) / (last[j] - first[j]) * overlap
        rows.append([output[i] - 1, p / replicas, output[i] - 1 + d / replicas])
        ys.append(b - a)
    return np.array(rows), np.array(ys)


def _random_intervals(seed, n=250):
    rng = np.random.default_rng(seed)
    first = rng.uniform(0, 60, n)
    last = first + rng.exponential(4.0, n)
    output = rng.integers(1, 300, n)
    prompt = rng.integers(1, 2000, n)
    last[:4] = first[:4]  # zero-length windows: not usable
    first[10:20] = first[0]  # ties, on a window's open end
    first[20:25] = last[30]  # and on another's closed end
    return first, last, prompt, output


@pytest.mark.parametrize("replicas", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_design_equals_the_pairwise_definition(seed, replicas):
    first, last, prompt, output = _random_intervals(seed)
    X, y = decode_design(first, last, prompt, output, replicas, min_tpot_ratio=0)
    Xb, yb = _brute(first, last, prompt, output, replicas)
    assert X.shape == Xb.shape and len(y) > 200
    np.testing.assert_allclose(y, yb, rtol=0, atol=1e-12)
    np.testing.assert_allclose(X, Xb, rtol=1e-9, atol=1e-7)
    # the default drops requests far faster than the run's median TPOT, everywhere
    tpot = np.where((output >= 2) & (last > first), (last - first) / np.maximum(output - 1, 1), np.nan)
    use = tpot >= 0.25 * np.nanmedian(tpot)
    Xd, yd = decode_design(first, last, prompt, output, replicas)
    Xb, yb = _brute(first, last, prompt, output, replicas, use=use)
    assert 0 < use.sum() < len(yb) + 1 and len(yd) == use.sum()
    np.testing.assert_allclose(Xd, Xb, rtol=1e-9, atol=1e-7)


def test_a_constant_latency_cancels():
    """A client's view of the stream (every timestamp late by the same amount) changes nothing."""
    first, last, prompt, output = _random_intervals(2)
    X, y = decode_design(first, last, prompt, output)
    X2, y2 = decode_design(first + 0.037, last + 0.037, prompt, output)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-9)
    np.testing.assert_allclose(X2, X, rtol=1e-9, atol=1e-6)


def _synthetic(rate, seed, n=300, replicas=1, max_num_seqs=8):
    """A workload like the CPU recordings (Poisson arrivals, prompts and outputs of 32-256)."""
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, n))
    arr -= arr[0]
    prompt, out = rng.integers(32, 257, n), rng.integers(32, 257, n)
    z = np.zeros(n)
    return RecordedRun("synthetic", arr, prompt, out, z, z, z,
                       {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": 2048,
                        "replicas": replicas, "kv_blocks": None, "block_size": 16})


def _recorded(run, step=LinearStepModel(*TRUE)):
    """``run`` with the timestamps this engine gives it under ``step`` (a 'recording')."""
    sim = replay(run, engine_for(run, step))
    run.ttft_s, run.e2e_s, run.tpot_s = sim["ttft"], sim["e2e"], sim["tpot"]
    return run, run.arrival_s + sim["ttft"], run.arrival_s + sim["e2e"], sim


# Tolerances: the largest error over seeds 0-4 at each load, measured once, plus ~50%.  Only D
# is approximated in this engine (a prefill does complete in the step of the first token, so P
# is exact): the others' tokens are spread uniformly over their windows, while really fewer of
# them fall in prefill-heavy (long) steps.  D is thus over-counted where P is large, so c2 takes
# over part of c1, the more the busier the engine (c1 errors: -5% at ~1.8 sequences, -11% at
# ~5, -14% with 2 replicas).  Measured maxima (c0, c1, c2): rate 1: 1.2%, 7.9%, 4.8%; rate 3:
# 3.1%, 15%, 5.5%; rate 6 on 2 replicas: 7.6%, 24%, 4.1%.
@pytest.mark.parametrize("rate,replicas,tol", [(1, 1, (0.02, 0.12, 0.07)),
                                               (3, 1, (0.05, 0.23, 0.08)),
                                               (6, 2, (0.11, 0.35, 0.06))])
def test_recovers_the_engines_own_coefficients(rate, replicas, tol):
    for seed in range(5):
        run, first, last, _ = _recorded(_synthetic(rate, seed, replicas=replicas))
        coef = decode_fit(first, last, run.prompt, run.output, replicas)
        err = np.abs(coef / np.array(TRUE) - 1)
        assert (err <= tol).all(), (seed, err)


def test_ignoring_the_replicas_is_wrong():
    """The 1/R sharing matters: the same 2-replica recording fitted as one replica is far off."""
    run, first, last, _ = _recorded(_synthetic(6, 0, replicas=2))
    coef = decode_fit(first, last, run.prompt, run.output, replicas=1)
    assert abs(coef[2] / TRUE[2] - 1) > 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_light_load_fit_predicts_a_full_batch(seed):
    """Fitted where ~1.8 of 8 sequences run, replayed where the batch is full with a queue: median
    E2E and mean TPOT within 10% of the engine with the true coefficients (measured: -5% to -6%
    and -2.4%)."""
    light, first, last, _ = _recorded(_synthetic(1, seed))
    X, _ = decode_design(first, last, light.prompt, light.output)
    assert X[:, 2].sum() / X[:, 0].sum() < 2.5  # mean batch seen by the fit
    fitted = LinearStepModel(*decode_fit(first, last, light.prompt, light.output))
    full = _synthetic(8, seed + 100)
    _, f_first, f_last, truth = _recorded(full)
    Xf, _ = decode_design(f_first, f_last, full.prompt, full.output)
    assert Xf[:, 2].sum() / Xf[:, 0].sum() > 7  # the batch is full...
    assert stats(truth["ttft"])["median"] > 10 * stats(truth["tpot"])["median"]  # ...with a queue
    pred = replay(full, engine_for(full, fitted))
    for m, s in (("e2e", "median"), ("tpot", "mean")):
        assert stats(pred[m])[s] == pytest.approx(stats(truth[m])[s], rel=0.10), m


def test_initial_fit_is_the_regression_on_one_run():
    run, first, last, _ = _recorded(_synthetic(3, 0))
    coef = decode_fit(first, last, run.prompt, run.output)
    m = initial_fit(run)
    assert (m.c0_s, m.c1_s, m.c2_s) == pytest.approx(tuple(coef), rel=1e-12)


def test_joint_fit_stacks_the_runs():
    """Two loads fitted together: one NNLS over both runs' rows, close to the truth."""
    a = _recorded(_synthetic(1, 0))[0]
    b = _recorded(_synthetic(5, 1))[0]
    m = initial_fit_runs([a, b])
    assert m.c0_s == pytest.approx(TRUE[0], rel=0.08)
    assert m.c2_s == pytest.approx(TRUE[2], rel=0.08)
    assert (m.c0_s, m.c2_s) != pytest.approx((initial_fit(a).c0_s, initial_fit(a).c2_s), rel=1e-6)


def _timeseries(seconds=30):
    """Busy seconds of an engine with step model TRUE: ``steps`` steps over ``running``
    sequences and ``prompt`` prefill tokens fill each second exactly."""
    t = np.arange(seconds)
    running = 1.0 + t % 7
    prompt = 200.0 * (t % 4)
    steps = (1 - TRUE[1] * prompt) / (TRUE[0] + TRUE[2] * running)
    return pd.DataFrame({"t": t, "running": running, "waiting": 0.0,
                         "prompt_throughput": prompt, "gen_throughput": steps * running})


def test_too_few_requests_fall_back_to_the_timeseries_then_the_guess():
    run = _recorded(_synthetic(2, 0, n=MIN_REQUESTS - 1))[0]
    assert decode_fit(run.arrival_s + run.ttft_s, run.arrival_s + run.e2e_s, run.prompt,
                      run.output) is None
    assert initial_fit(run) == GENERIC_START  # no time series either
    run.timeseries = _timeseries()
    ts = _timeseries_fit(run)
    assert (ts.c0_s, ts.c1_s, ts.c2_s) == pytest.approx(TRUE, rel=1e-6)
    assert initial_fit(run) == ts
    # several runs, one of them too short: the geometric mean of each run's own stage 1
    full = _recorded(_synthetic(3, 0))[0]
    g = initial_fit_runs([full, run])
    assert g.c0_s == pytest.approx(np.sqrt(initial_fit(full).c0_s * ts.c0_s), rel=1e-12)


def test_burst_delivered_requests_are_left_out():
    """A request whose tokens all reached the client at once (TPOT ~0, as in the 4-layer CPU
    recordings) gives no row and no decoding sequences to the others; its prompt still counts."""
    run, first, last, _ = _recorded(_synthetic(3, 0))
    X, y = decode_design(first, last, run.prompt, run.output)
    k = 40
    last_b = last.copy()
    last_b[k] = first[k] + 1e-4
    Xb, yb = decode_design(first, last_b, run.prompt, run.output)
    assert len(y) == len(run.output)  # every request usable before: row i is request i
    keep = np.arange(len(y)) != k
    assert len(yb) == len(y) - 1
    np.testing.assert_allclose(yb, y[keep])
    np.testing.assert_allclose(Xb[:, :2], X[keep, :2])  # steps, and P (k's prompt included)
    np.testing.assert_allclose(Xb[:, 2], (X[:, 2] - _own_share(first, last, run.output, k))[keep],
                               rtol=1e-9, atol=1e-6)


def _own_share(first, last, output, k):
    """Decoding-sequence-steps request ``k`` contributes to every window (uniform rate)."""
    overlap = np.clip(np.minimum(last, last[k]) - np.maximum(first, first[k]), 0, None)
    share = (output[k] - 1) / (last[k] - first[k]) * overlap
    share[k] = 0.0
    return share


def test_a_kv_bound_run_starts_from_its_time_series():
    """With a cache that holds about one request, half the requests are preempted: their decode
    windows hold their wait to be recomputed and the regression is biased (c0 halved); stage 1
    then takes the time-series fit.  Without a cache limit the same run keeps the regression."""
    from sim.experiments.calibrate import KV_BOUND_SHARE, _decode_design, _kv_bound
    from sim.experiments.decode_regression import fit_design

    run, first, last, sim = _recorded(_kv_run())
    assert (sim["preemptions"] > 0).mean() > 0.2  # really KV-bound
    own = fit_design([_decode_design(run)])
    assert own[0] < 0.8 * TRUE[0]  # the bias this guards against
    run.timeseries = _timeseries()
    assert _kv_bound(run, LinearStepModel(*own))
    assert initial_fit(run) == _timeseries_fit(run)
    free = dict(run.flags, kv_blocks=None)
    unbound = RecordedRun(run.name, run.arrival_s, run.prompt, run.output, run.ttft_s,
                          run.tpot_s, run.e2e_s, free, run.timeseries)
    assert not _kv_bound(unbound, LinearStepModel(*own))
    m = initial_fit(unbound)
    assert (m.c0_s, m.c1_s, m.c2_s) == pytest.approx(tuple(np.maximum(own, [0, 1e-6, 1e-6])),
                                                     rel=1e-12)
    assert 0 < KV_BOUND_SHARE < 0.1


def _kv_run():
    """The synthetic workload with a cache of 40 blocks (640 tokens) for max_num_seqs 8."""
    run = _synthetic(3, 0, n=200)
    run.flags["kv_blocks"] = 40
    return run
