"""Per-query frame -> ``vllm bench serve``'s flat result layout, so a simulated run and a
recorded benchmark can be diffed key by key with the same tools.

Names and formulas follow vLLM 0.32's ``vllm/benchmarks/serve.py`` (``calculate_metrics`` and
the ``result`` dict of ``benchmark``): ``completed``, ``total_input_tokens``,
``total_output_tokens``, ``duration``, ``request_throughput``, ``output_throughput``,
``total_token_throughput`` and, per metric, ``mean_/median_/std_/p99_<m>_ms`` (``std`` is
``np.std``, population; ``p99`` is vLLM's default ``--metric-percentiles 99``; ``p90`` is added
as vLLM names it under ``--metric-percentiles 90,99``).  Metrics: ``ttft`` (to first token),
``tpot`` ((last - first token) / (tokens - 1), 0 for 1-token requests, as vLLM), ``e2el``.
``itl`` is left out: vLLM pools every single inter-token gap, which neither the simulator's
recorder nor a recorded ``requests.jsonl`` keeps, so its median/p99 could not be vLLM's.

Input: a frame with ``arrival_s``, ``first_token_s``, ``finish_s``, ``prompt_tokens``,
``tokens_generated`` and optionally ``abandoned`` (the columns of ``queries.parquet``);
:func:`recorded_frame` builds one from a recorded vLLM run's ``requests.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PERCENTILES = (90, 99)
METRICS = ("ttft", "tpot", "e2el")


def _stats(name: str, seconds: np.ndarray) -> dict[str, float]:
    x = np.asarray(seconds, dtype=float)
    x = x if len(x) else np.zeros(1)  # vLLM: ``np.mean(values or 0)``
    out = {f"mean_{name}_ms": float(np.mean(x) * 1000), f"median_{name}_ms": float(np.median(x) * 1000),
           f"std_{name}_ms": float(np.std(x) * 1000)}
    for p in PERCENTILES:
        out[f"p{p}_{name}_ms"] = float(np.percentile(x, p) * 1000)
    return out


def bench_result(q: pd.DataFrame) -> dict:
    """The flat ``vllm bench serve`` result of one run's (one policy's) per-query rows.

    ``duration`` runs from the first arrival to the last token (vLLM: benchmark start to the
    last response); abandoned queries are not ``completed`` and contribute no tokens."""
    served = ~q["abandoned"].to_numpy(bool) if "abandoned" in q else np.ones(len(q), bool)
    arr = q["arrival_s"].to_numpy(float)[served]
    first = q["first_token_s"].to_numpy(float)[served]
    fin = q["finish_s"].to_numpy(float)[served]
    out_tok = q["tokens_generated"].to_numpy(np.int64)[served]
    in_tok = q["prompt_tokens"].to_numpy(np.int64)[served]
    duration = float(fin.max() - q["arrival_s"].to_numpy(float).min()) if len(fin) else 0.0
    tpot = np.where(out_tok > 1, (fin - first) / np.maximum(out_tok - 1, 1), 0.0)
    total_in, total_out = int(in_tok.sum()), int(out_tok.sum())
    res = {
        "completed": int(served.sum()),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "duration": duration,
        "request_throughput": float(served.sum() / duration) if duration > 0 else 0.0,
        "output_throughput": float(total_out / duration) if duration > 0 else 0.0,
        "total_token_throughput": float((total_in + total_out) / duration) if duration > 0 else 0.0,
    }
    res.update(_stats("ttft", first - arr))
    res.update(_stats("tpot", tpot))
    res.update(_stats("e2el", fin - arr))
    return res


def bench_by_policy(queries: pd.DataFrame) -> dict[str, dict]:
    """``{policy: bench_result}``: one file keyed by policy, so one ``jq .clear`` (or a dict diff
    per key) lines a policy up against a measured run's result JSON."""
    return {str(p): bench_result(g) for p, g in queries.groupby("policy", sort=False)}


def recorded_frame(requests_jsonl: str | Path) -> pd.DataFrame:
    """A recorded vLLM run's ``requests.jsonl`` as the columns :func:`bench_result` reads.

    Times are the engine's monotonic ``queued_ts`` / ``first_token_ts`` / ``last_token_ts``
    (``arrival_time`` is wall clock, another clock), so latency counts from the engine queue."""
    from sim.experiments.recorded import read_requests  # the one checked reader of recorded runs

    df = read_requests(requests_jsonl)
    return pd.DataFrame({
        "arrival_s": df["queued_ts"].astype(float),
        "first_token_s": df["first_token_ts"].astype(float),
        "finish_s": df["last_token_ts"].astype(float),
        "prompt_tokens": df["input_toks"].astype(np.int64),
        "tokens_generated": df["output_toks"].astype(np.int64),
    })
