"""The KV cache size of a recorded vLLM run that does not record it, inferred from the run itself.

Why: a KV-bound run replayed with an unlimited cache keeps far more sequences running than vLLM
did, and its TPOT and TTFT come out wrong by 50-100% (the earlier RTX 4090 run of
``shared/data/serving/vllm_runs``).  Its ``meta.json`` has no ``kv_cache`` block, but the run
shows how much KV it held whenever the cache was what stopped vLLM from scheduling more.

How (one estimate per ``timeseries.csv`` tick, then the median):

1. Align the ticks with the requests' monotonic clock: tick ``t`` ends at wall time
   ``started_at + t``, and the offset wall - monotonic is the median of ``arrival_time -
   queued_ts`` over the requests.
2. At that instant every request between ``scheduled_ts`` and ``last_token_ts`` holds its prompt
   (prefilled linearly between ``scheduled_ts`` and ``first_token_ts``) plus its generated
   tokens (linear between ``first_token_ts`` and ``last_token_ts``), rounded up to blocks.
   Preempted requests are counted there too, so the mean blocks per such request is multiplied
   by vLLM's own ``running`` count of that tick, which excludes them.
3. A tick is used when the cache is what binds: requests are ``waiting`` while ``running`` is
   below 90% of ``max_num_seqs`` and has not grown over the last 3 ticks (a ramp, where running
   still grows as chunked prefill admits requests, is limited by prefill, not by KV).  If the tick records KV use (``kv_cache_pct`` > 0), the held blocks
   are divided by that fraction and any tick with at least 20% use counts.

Checked on the RTX 4090 run that does record its size (2,588 blocks): the inference gives within
2% of it (tests/test_kv_infer.py).  Fewer than 5 usable ticks: the run never ran out of KV, and
``None`` (unlimited) is returned, which replays such a run the same as any size it never reached.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

MIN_TICKS = 5
MIN_KV_PCT = 20.0
RAMP_TICKS = 3
NEAR_FULL = 0.9


def _wall(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def held_blocks(tau: float, req: pd.DataFrame, block_size: int) -> tuple[int, float]:
    """(requests holding KV at monotonic time ``tau``, their blocks) reconstructed from timestamps."""
    s = req["scheduled_ts"].to_numpy(float)
    f = req["first_token_ts"].to_numpy(float)
    last = req["last_token_ts"].to_numpy(float)
    p = req["input_toks"].to_numpy(float)
    o = req["output_toks"].to_numpy(float)
    held = (s <= tau) & (tau < last)
    if not held.any():
        return 0, 0.0
    gen = np.where(tau >= f, 1 + np.clip((tau - f) / np.maximum(last - f, 1e-9), 0, 1) * (o - 1), 0)
    pre = np.where(tau >= f, p, p * np.clip((tau - s) / np.maximum(f - s, 1e-9), 0, 1))
    blocks = np.ceil((pre + gen)[held] / block_size)
    return int(held.sum()), float(blocks.sum())


def infer_kv_blocks(req: pd.DataFrame, ts: pd.DataFrame | None, meta: dict, *, max_num_seqs: int,
                    block_size: int = 16) -> tuple[int | None, str]:
    """``(blocks or None, how)``: the run's KV capacity as the module docstring describes."""
    need = {"t", "running", "waiting"}
    start = _wall(meta.get("started_at"))
    cols = {"arrival_time", "scheduled_ts"}
    if ts is None or not need <= set(ts.columns) or start is None or not cols <= set(req):
        return None, "no timeseries.csv with t/running/waiting or no started_at: cannot infer"
    offset = float(np.median(req["arrival_time"].to_numpy(float) - req["queued_ts"].to_numpy(float)))
    has_pct = "kv_cache_pct" in ts.columns and float(ts["kv_cache_pct"].max()) > 0
    # Not binding: a ramp (running still growing as prefill admits requests) or a full batch.
    running_all = ts["running"].to_numpy(float)
    stalled = np.zeros(len(ts), bool)
    stalled[RAMP_TICKS:] = running_all[RAMP_TICKS:] <= running_all[:-RAMP_TICKS]
    stalled &= (ts["waiting"].to_numpy(float) > 0) & (running_all < NEAR_FULL * max_num_seqs)
    est = []
    for i, row in enumerate(ts.itertuples(index=False)):
        running = float(row.running)
        if running <= 0:
            continue
        pct = float(getattr(row, "kv_cache_pct", 0.0)) if has_pct else 0.0
        if has_pct and pct < MIN_KV_PCT:
            continue
        if not has_pct and not stalled[i]:
            continue
        n, blocks = held_blocks(start + float(row.t) - offset, req, block_size)
        if n == 0:
            continue
        used = blocks / n * running
        est.append(used / (pct / 100.0) if has_pct else used)
    if len(est) < MIN_TICKS:
        return None, (f"only {len(est)} ticks where the KV cache was binding: the run never ran "
                      "out of KV, simulated as unlimited")
    kv = int(round(float(np.median(est))))
    src = "the recorded KV use %" if has_pct else "ticks with requests waiting below max_num_seqs"
    return kv, (f"KV cache size not recorded: {kv} blocks inferred from the run ({len(est)} ticks, "
                f"{src}; docs/validation.md)")


__all__ = ["held_blocks", "infer_kv_blocks"]
