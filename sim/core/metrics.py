"""Summary metrics of one policy's run, named as ``vllm bench serve`` names them where they exist.

Latencies are measured from the query's arrival, so time spent waiting for an allocation window
or batch counts, like engine queueing.  They are taken over *served* queries (an abandoned
query gets no generation and no latency figures; its share is ``abandon_rate``):

* ``e2el``: arrival to last token.     * ``ttft``: arrival to first token.
* ``tpot``: (last - first token) / (tokens - 1), over queries with at least 2 tokens.
* ``queue_wait``: arrival to joining the running batch (decision wait + engine queue).

Costs: ``tokens_allocated`` (sum of caps), ``tokens_generated`` (what was actually decoded),
``tokens_per_query`` (generated per arriving query, abandoned ones counting 0) and GPU busy
time (``gpu_utilisation`` is the share of time a replica is running steps, ``mean_running``
the time-average batch size: together they say how loaded the GPU is).  Accuracy:
``accuracy`` scores the drawn samples; ``expected_accuracy`` averages each query's true curve
at its cap (same mean, lower variance: better for comparisons).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STAT_NAMES = ("mean", "median", "p90", "p99")


def stats_ms(seconds: np.ndarray) -> dict[str, float | None]:
    x = np.asarray(seconds, dtype=float)
    x = x[np.isfinite(x)] * 1000.0
    if len(x) == 0:
        return {k: None for k in STAT_NAMES}
    q = np.percentile(x, [50, 90, 99])
    return {"mean": float(x.mean()), "median": float(q[0]), "p90": float(q[1]), "p99": float(q[2])}


def weighted_stats_ms(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    """``stats_ms`` of a sample where value i occurs ``weights[i]`` times (weighted quantiles
    at the same plotting positions as ``np.percentile``'s default when weights are integers)."""
    v = np.asarray(values, dtype=float)
    w = np.asarray(weights, dtype=float)
    ok = np.isfinite(v) & (w > 0)
    v, w = v[ok] * 1000.0, w[ok]
    if len(v) == 0:
        return {k: None for k in STAT_NAMES}
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    pos = np.array([0.5, 0.9, 0.99]) * (cum[-1] - 1)  # 0-based rank in the expanded sample
    lo = np.searchsorted(cum, np.floor(pos) + 1, side="left")
    hi = np.searchsorted(cum, np.minimum(np.floor(pos) + 2, cum[-1]), side="left")
    frac = pos - np.floor(pos)
    q = v[lo] + (v[hi] - v[lo]) * frac
    return {"mean": float(np.sum(v * w) / cum[-1]), "median": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2])}


def goodput(ttft_s: np.ndarray, tpot_s: np.ndarray, e2el_s: np.ndarray, slo: dict | None) -> np.ndarray:
    """Which served requests meet every limit of ``slo`` (``ttft_ms``, ``tpot_ms``, ``e2el_ms``;
    None = no limit), as ``vllm bench serve --goodput`` counts them (a 1-token request has no
    TPOT and passes that limit)."""
    good = np.isfinite(e2el_s)
    slo = slo or {}
    for key, x in (("ttft_ms", ttft_s), ("tpot_ms", tpot_s), ("e2el_ms", e2el_s)):
        lim = slo.get(key)
        if lim is not None:
            good &= ~(x * 1000.0 > lim)  # NaN (no TPOT) passes
    return good


def summarise(q: pd.DataFrame, *, gpu_busy_s: float, replicas: int, slo: dict | None = None) -> dict:
    """One policy's summary from its rows of ``queries.parquet``.

    ``itl`` is the gap between consecutive tokens of a request; the engine does not keep every
    token's time, so each request contributes its mean gap (its TPOT) once per gap: the mean is
    exact, the quantiles treat a request's gaps as equal.  ``request_goodput`` counts served
    requests per second that meet the scenario's ``slo`` (all served ones with no limits).
    """
    n = len(q)
    served = ~q["abandoned"].to_numpy()
    arrival = q["arrival_s"].to_numpy()
    finish = q["finish_s"].to_numpy()
    gen = q["tokens_generated"].to_numpy()
    ends = np.concatenate([finish[served], q["decision_s"].to_numpy()])
    duration = float(np.nanmax(ends) - arrival.min()) if n else 0.0
    s_arr = arrival[served]
    tpot = np.where(
        gen[served] >= 2,
        (finish[served] - q["first_token_s"].to_numpy()[served]) / np.maximum(gen[served] - 1, 1),
        np.nan,
    )
    price = q["shadow_price"].to_numpy()
    first = q["first_token_s"].to_numpy()[served]
    good = goodput(first - s_arr, tpot, finish[served] - s_arr, slo)
    return {
        "policy": str(q["policy"].iloc[0]) if n else None,
        "n_queries": int(n),
        "n_served": int(served.sum()),
        "accuracy": float(q["correct"].mean()) if n else 0.0,
        "expected_accuracy": float(q["expected_accuracy"].mean()) if n else 0.0,
        "tokens_allocated": int(q["budget"].sum()),
        "tokens_generated": int(gen.sum()),
        "tokens_per_query": float(gen.sum() / n) if n else 0.0,
        "abandon_rate": float(1.0 - served.mean()) if n else 0.0,
        "e2el_ms": stats_ms(finish[served] - s_arr),
        "ttft_ms": stats_ms(q["first_token_s"].to_numpy()[served] - s_arr),
        "tpot_ms": stats_ms(tpot),
        "itl_ms": weighted_stats_ms(tpot, np.maximum(gen[served] - 1, 0)),
        "queue_wait_ms": stats_ms(q["scheduled_s"].to_numpy()[served] - s_arr),
        "request_goodput": float(good.sum() / duration) if duration > 0 else 0.0,
        "slo_attainment": float(good.mean()) if len(good) else 0.0,
        "request_throughput": float(served.sum() / duration) if duration > 0 else 0.0,
        "output_throughput": float(gen.sum() / duration) if duration > 0 else 0.0,
        "sim_duration_s": duration,
        "gpu_busy_s": float(gpu_busy_s),
        "gpu_utilisation": float(gpu_busy_s / (duration * replicas)) if duration > 0 else 0.0,
        "gpu_seconds_per_query": float(gpu_busy_s / n) if n else 0.0,
        # Little's law: time-average number of requests in the running batches, per replica.
        "mean_running": float(np.nansum(finish[served] - q["scheduled_s"].to_numpy()[served])
                              / (duration * replicas)) if duration > 0 else 0.0,
        "shadow_price_mean": float(np.nanmean(price)) if np.isfinite(price).any() else None,
    }
