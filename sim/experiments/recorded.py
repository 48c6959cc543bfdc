"""Reading a recorded vLLM run folder: the one place its files are checked.

A recorded run (``shared/data/serving/vllm_runs/*``, ``clearsim traces record-serving``) is
``requests.jsonl`` + ``meta.json`` + an optional ``timeseries.csv``.  Every command that reads
one (``clearsim calibrate RUN``, ``calibrate --fit/--check``, :func:`sim.experiments.vllm_bench.recorded_frame`)
goes through :func:`read_recorded`, so a broken file gets the same one-line
:class:`~sim.foundation.errors.UserError` everywhere: the file, the line (or column, or field) and what is
allowed, before any replay starts.

What is checked, and why each limit exists (a run-away guard stops an absurd value from costing
minutes or gigabytes in the replay, or overflowing an int64):

* ``requests.jsonl``: one JSON object per line, at least one and at most
  :data:`MAX_REQUESTS`; ``input_toks`` whole in [0, :data:`MAX_TOKENS`], ``output_toks`` whole
  in [1, :data:`MAX_TOKENS`]; ``queued_ts <= first_token_ts <= last_token_ts``, all finite
  numbers; ``arrival_time`` and ``scheduled_ts``, when present, finite numbers.
* ``meta.json``: a JSON object; ``engine_kwargs.max_num_seqs``, ``max_num_batched_tokens``,
  ``data_parallel_size``, ``tensor_parallel_size`` and ``kv_cache.num_gpu_blocks``,
  ``block_size`` whole numbers >= 1 (or absent / null) within :data:`META_LIMITS`, and
  data x tensor parallel GPUs no more than ``hardware.device_count`` when that is recorded;
  ``started_at`` an ISO time, ``timing_source`` a string, when present.
* ``timeseries.csv`` (optional, but if present it must be sound, not silently skipped): a CSV
  with a header, numeric, finite, non-negative values in ``t``, ``running``, ``waiting``,
  ``prompt_throughput``, ``gen_throughput``, ``kv_cache_pct`` (those present), ``kv_cache_pct``
  at most 100.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from sim.foundation.errors import UserError
from sim.foundation.spec import short

REQUESTS, META, TIMESERIES = "requests.jsonl", "meta.json", "timeseries.csv"
MAX_REQUESTS = 1_000_000  # requests replayed per run (each fit replays them ~160 times)
MAX_TOKENS = 10_000_000  # prompt or output tokens of one request
MAX_FILE_BYTES = 1 << 30  # any one file of the folder
#: meta.json integers: field -> largest allowed (replicas match the scenario's engine.replicas)
META_LIMITS = {
    "engine_kwargs.max_num_seqs": 1_000_000,
    "engine_kwargs.max_num_batched_tokens": 100_000_000,
    "engine_kwargs.data_parallel_size": 4096,
    "engine_kwargs.tensor_parallel_size": 4096,
    "kv_cache.num_gpu_blocks": 1_000_000_000,
    "kv_cache.block_size": 65_536,
}
TIMESTAMPS = ("queued_ts", "first_token_ts", "last_token_ts")
OPTIONAL_TIMES = ("arrival_time", "scheduled_ts")
TS_COLUMNS = ("t", "running", "waiting", "prompt_throughput", "gen_throughput", "kv_cache_pct")
LIMITS_HELP = (f"Run-away guards: at most {MAX_REQUESTS:,} requests per run, {MAX_TOKENS:,} "
               f"tokens per request, data_parallel_size and tensor_parallel_size <= 4096, "
               f"files <= 1 GiB; a broken file is refused before any replay (docs/hardening.md).")


@dataclass
class RecordedFolder:
    """The checked contents of a recorded run folder."""

    path: Path
    requests: pd.DataFrame  # in file order; the columns above, numeric
    meta: dict
    timeseries: pd.DataFrame | None


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UserError(f"file is larger than {MAX_FILE_BYTES >> 30} GiB (run-away guard)",
                            where=str(path))
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text", where=str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror or exc.__class__.__name__})",
                        where=str(path)) from None


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_requests(path: str | Path) -> pd.DataFrame:
    """The checked requests of a ``requests.jsonl`` (one row per line, file order)."""
    path = Path(path)
    rows, lines = [], []
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= MAX_REQUESTS:
            raise UserError(f"more than {MAX_REQUESTS:,} requests (run-away guard)",
                            where=f"{path}:{n}")
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise UserError(f"not a JSON object: {short(line)}", where=f"{path}:{n}") from None
        if not isinstance(row, dict):
            raise UserError(f"got {short(row)}; expected a JSON object per line",
                            where=f"{path}:{n}")
        rows.append(row)
        lines.append(n)
    if not rows:
        raise UserError("has no requests; expected one JSON object per line", where=str(path))
    cols = {}
    for name in ("input_toks", "output_toks", *TIMESTAMPS, *OPTIONAL_TIMES):
        optional = name in OPTIONAL_TIMES
        if optional and not any(name in r for r in rows):
            continue
        values = []
        for r, n in zip(rows, lines):
            v = r.get(name)
            if not _is_number(v) or abs(v) > 1e15 or not math.isfinite(v):
                what = "missing" if name not in r else f"got {short(v)}"
                kind = (f"a whole number in [{int(name == 'output_toks')}, {MAX_TOKENS:,}]"
                        if name.endswith("_toks") else "a finite number of seconds")
                raise UserError(f"{what}; expected {kind}", where=f"{path}:{n}", field=name)
            values.append(v)
        cols[name] = np.asarray(values, dtype=float)
    for name, low in (("input_toks", 0), ("output_toks", 1)):
        x = cols[name]
        bad = np.flatnonzero((x != np.floor(x)) | (x < low) | (x > MAX_TOKENS))
        if len(bad):
            i = int(bad[0])
            raise UserError(f"got {short(rows[i][name])}; expected a whole number in "
                            f"[{low}, {MAX_TOKENS:,}]", where=f"{path}:{lines[i]}", field=name)
        cols[name] = x.astype(np.int64)
    for a, b in zip(TIMESTAMPS, TIMESTAMPS[1:]):
        bad = np.flatnonzero(cols[a] > cols[b])
        if len(bad):
            i = int(bad[0])
            raise UserError(f"{b} {short(rows[i][b])} is before {a} {short(rows[i][a])}; "
                            f"expected {' <= '.join(TIMESTAMPS)}", where=f"{path}:{lines[i]}",
                            field=b)
    df = pd.DataFrame(cols)
    if any("request_id" in r for r in rows):
        df["request_id"] = [str(r.get("request_id", "")) for r in rows]
    return df


def _meta(path: Path) -> dict:
    try:
        meta = json.loads(_read_text(path))
    except (ValueError, RecursionError) as exc:
        raise UserError(f"not valid JSON ({short(str(exc))})", where=str(path)) from None
    if not isinstance(meta, dict):
        raise UserError(f"got {short(meta)}; expected a JSON object", where=str(path))
    for section in ("engine_kwargs", "kv_cache", "hardware"):
        if meta.get(section) is not None and not isinstance(meta[section], dict):
            raise UserError(f"got {short(meta[section])}; expected an object or null",
                            where=str(path), field=section)
    for dotted, hi in META_LIMITS.items():
        section, key = dotted.split(".")
        v = (meta.get(section) or {}).get(key)
        if v is None:
            continue
        if not _is_number(v) or not 1 <= v <= hi or v != int(v):
            raise UserError(f"got {short(v)}; expected a whole number in [1, {hi:,}] or null",
                            where=str(path), field=dotted)
    kw, gpus = meta.get("engine_kwargs") or {}, (meta.get("hardware") or {}).get("device_count")
    used = (kw.get("data_parallel_size") or 1) * (kw.get("tensor_parallel_size") or 1)
    if _is_number(gpus) and gpus >= 1 and used > gpus:
        raise UserError(f"data_parallel_size x tensor_parallel_size = {used} GPUs, but "
                        f"hardware.device_count is {short(gpus)}; expected at most that many",
                        where=str(path), field="engine_kwargs.data_parallel_size")
    for key in ("started_at", "timing_source", "model", "vllm_version"):
        v = meta.get(key)
        if v is not None and not isinstance(v, str):
            raise UserError(f"got {short(v)}; expected a string or null", where=str(path), field=key)
    if meta.get("started_at"):
        try:
            datetime.fromisoformat(meta["started_at"].replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"got {short(meta['started_at'])}; expected an ISO time such as "
                            "2026-08-20T23:19:39Z", where=str(path), field="started_at") from None
    return meta


def _timeseries(path: Path) -> pd.DataFrame | None:
    if not path.exists():
        return None
    from io import StringIO

    text = _read_text(path)
    try:
        ts = pd.read_csv(StringIO(text))
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise UserError(f"not a CSV with a header row ({short(first)}); expected columns "
                        f"{', '.join(TS_COLUMNS)} (or remove the file)", where=str(path)) from None
    for col in (c for c in TS_COLUMNS if c in ts.columns):
        x = pd.to_numeric(ts[col], errors="coerce").to_numpy(float)
        hi = 100.0 if col == "kv_cache_pct" else 1e12
        bad = np.flatnonzero(~np.isfinite(x) | (x < 0) | (x > hi))
        if len(bad):
            i = int(bad[0])
            v = ts[col].iloc[i]
            raise UserError(f"got {short(v.item() if hasattr(v, 'item') else v)}; expected a "
                            f"finite number in [0, {hi:g}]", where=f"{path}:{i + 2}", field=col)
        ts[col] = x
    return ts


def read_recorded(run_dir: str | Path) -> RecordedFolder:
    """The checked files of recorded run folder ``run_dir`` (see the module docstring)."""
    d = Path(run_dir)
    if not d.is_dir():
        raise UserError("no such folder; expected a recorded vLLM run (requests.jsonl, "
                        "meta.json, optional timeseries.csv)", where=str(d))
    for name in (REQUESTS, META):
        if not (d / name).is_file():
            raise UserError(f"missing {name}: not a recorded vLLM run (requests.jsonl, meta.json,"
                            " optional timeseries.csv; the layout of shared/data/serving/"
                            "vllm_runs/*)", where=str(d))
    meta = _meta(d / META)
    return RecordedFolder(d, read_requests(d / REQUESTS), meta, _timeseries(d / TIMESERIES))


__all__ = ["LIMITS_HELP", "RecordedFolder", "read_recorded", "read_requests"]
