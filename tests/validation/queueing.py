"""Shared helpers of the queueing-theory validation: run the engine reduced to a textbook queue
and estimate a mean with a confidence interval from independent replications (seeds)."""

from __future__ import annotations

import heapq
import math

import numpy as np
import simpy
from scipy import stats

from sim.core.engine import (
    EngineConfig,
    LinearStepModel,
    Recorder,
    Replica,
    Router,
    sample_timeseries,
)


def run_queue(arrival_s: np.ndarray, gen: np.ndarray, cfg: EngineConfig):
    """Dispatch request i at arrival_s[i] (1-token prompts); return recorder and replicas."""
    env = simpy.Environment()
    n = len(arrival_s)
    rec = Recorder(n)
    prompt = np.ones(n, dtype=np.int64)
    gen = np.asarray(gen, dtype=np.int64)
    reps = [Replica(env, cfg, prompt, gen, rec, r) for r in range(cfg.replicas)]
    router = Router(reps, cfg.routing)
    arr = arrival_s.tolist()

    def feeder():
        for i, t in enumerate(arr):
            if t > env.now:
                yield env.timeout(t - env.now)
            router.dispatch(np.array([i], dtype=np.int64))

    env.process(feeder())
    env.run()
    return rec, reps


def constant_step(c0: float) -> LinearStepModel:
    """Every step costs c0 whatever it holds: a request of g tokens needs g steps."""
    return LinearStepModel(c0_s=c0, c1_s=0.0, c2_s=0.0)


def mean_ci(samples: list[float], level: float = 0.999) -> tuple[float, float]:
    """Mean of independent replications and the half-width of its two-sided t interval."""
    x = np.asarray(samples, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def fcfs_waits(arrival_s: np.ndarray, service_s: np.ndarray, c: int = 1) -> np.ndarray:
    """Waits in one FCFS queue feeding ``c`` servers (Lindley / Kiefer-Wolfowitz recursion):
    each customer starts when it arrives or when the earliest server frees, whichever is later."""
    free = [0.0] * c
    out = np.empty(len(arrival_s))
    for i, (a, s) in enumerate(zip(arrival_s.tolist(), service_s.tolist())):
        start = max(a, free[0])
        out[i] = start - a
        heapq.heapreplace(free, start + s)
    return out


def combined_estimate(engine: list[float], recursion_same: list[float], recursion_more: list[float],
                      level: float = 0.99) -> tuple[float, float]:
    """E[engine wait] = E[engine - recursion on the same paths] + E[recursion]: the first term
    from the engine's replications (it varies little: both see the same arrivals and lengths),
    the second from many cheap extra replications of the recursion alone (control variate).
    Returns the estimate and its confidence half-width (t with Welch-Satterthwaite dof)."""
    d = np.asarray(engine) - np.asarray(recursion_same)
    x = np.asarray(recursion_more)
    vd, vx = d.var(ddof=1) / len(d), x.var(ddof=1) / len(x)
    var = vd + vx
    dof = var ** 2 / (vd ** 2 / (len(d) - 1) + vx ** 2 / (len(x) - 1)) if var > 0 else 1.0
    return float(d.mean() + x.mean()), float(stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(var))


def assert_within(estimate: tuple[float, float], theory: float, rel: float = 0.03) -> None:
    """The estimate is within ``rel`` of theory, and the test has the power to tell: the
    confidence half-width is itself below ``rel`` (otherwise more queries are needed)."""
    mean, half = estimate
    assert half <= rel * abs(theory), f"underpowered: CI half-width {half:.4g} vs theory {theory:.4g}"
    assert abs(mean - theory) <= rel * abs(theory), (
        f"estimate {mean:.5g} +- {half:.3g} vs theory {theory:.5g} ({(mean - theory) / theory:+.2%})")


def assert_little(rec: Recorder, reps: list[Replica], arrival_s: np.ndarray, rel: float = 0.03) -> None:
    """Little's law on the run: the time average of requests in system (running + waiting,
    from the sampled time series) times the horizon equals the summed sojourn times.  Sampling
    every dt misplaces each of the 2n jumps by a uniform error of width dt, so the area's error
    has standard deviation sqrt(2 n / 12) dt: orders of magnitude below ``rel`` here."""
    ts = sample_timeseries(reps)
    dt = reps[0].cfg.sample_s
    area = float(np.sum(ts["running"] + ts["waiting"])) * dt
    sojourn = float(np.sum(rec.finish_s - arrival_s))
    assert np.isfinite(rec.finish_s).all()
    assert abs(area - sojourn) <= rel * sojourn, (area, sojourn)


def erlang_c_wait(lam: float, mean_s: float, c: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C)."""
    a = lam * mean_s
    rho = a / c
    top = a ** c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c / mean_s - lam)


def cfg_for(c0: float, *, seqs: int = 1, replicas: int = 1, routing: str = "round-robin",
            sample_s: float | None = None) -> EngineConfig:
    return EngineConfig(step=constant_step(c0), max_num_seqs=seqs, max_num_batched_tokens=max(seqs, 1),
                        replicas=replicas, routing=routing, sample_s=sample_s)
