"""Reading clearsim's own run and sweep folders (for ``clearsim report``): the one checked loader.

A run folder (``clearsim run``) holds ``summary.json``, ``queries.parquet`` and optionally
``timeseries.parquet``; a sweep folder (``clearsim sweep``) holds ``sweep.json``,
``results.parquet`` and ``aggregate.parquet``.  Files get edited, truncated by a full disk or
copied half-way; each is checked here before any figure is drawn, so a broken one is a single
:class:`~sim.foundation.errors.UserError` naming the file and what is wrong (not a pyarrow or KeyError
traceback from deep inside the plotting):

* a Parquet file that pyarrow cannot read (corrupt, truncated, not Parquet), or with none of
  its rows, or without a column the report reads (:data:`QUERY_COLUMNS`, :data:`RESULT_COLUMNS`,
  :data:`AGGREGATE_COLUMNS`), or with such a column not numeric where a number is expected;
* a JSON file that is not a JSON object, or lacks a key the report reads.

Where the report goes is checked before anything is read: :func:`check_out_file`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.foundation.errors import UserError
from sim.foundation.spec import short

#: queries.parquet columns the run report reads -> True when they must be numeric (or bool)
QUERY_COLUMNS = {
    "policy": False, "dataset": False, "expected_accuracy": True, "tokens_generated": True,
    "prompt_tokens": True, "budget": True, "abandoned": True, "arrival_s": True,
    "decision_s": True, "scheduled_s": True, "first_token_s": True, "finish_s": True,
    "shadow_price": True,
}
RESULT_COLUMNS = {"cell": True, "seed": True, "policy": False}
AGGREGATE_COLUMNS = {"cell": True, "policy": False, "n_seeds": True,
                     "tokens_per_query_mean": True, "expected_accuracy_mean": True}
SUMMARY_KEYS = {"scenario": str, "seed": int, "budget": (int, float), "fitted_beta": (int, float),
                "results": list}
RESULT_KEYS = ("policy", "accuracy", "expected_accuracy", "tokens_per_query", "abandon_rate",
               "e2el_ms", "queue_wait_ms", "gpu_utilisation", "gpu_seconds_per_query", "n_queries")
MANIFEST_KEYS = {"name": str, "keys": list, "seeds": list, "policies": list}


def read_parquet(path: Path, columns: dict[str, bool], *, fix: str) -> pd.DataFrame:
    """``path`` as a DataFrame, or one UserError naming it; ``columns`` must be present."""
    try:
        table = pq.read_table(path)
        df = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        first = (str(exc).splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"not a readable Parquet file, corrupt or truncated ({short(first)}); "
                        f"{fix}", where=str(path)) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"missing column(s) {', '.join(missing)}; {fix}", where=str(path))
    for col, numeric in columns.items():
        if numeric and not (pd.api.types.is_numeric_dtype(df[col])
                            or pd.api.types.is_bool_dtype(df[col])):
            raise UserError(f"column '{col}' holds {df[col].dtype}, not numbers; {fix}",
                            where=str(path))
    if not len(df):
        raise UserError(f"has no rows; {fix}", where=str(path))
    return df


def read_json_object(path: Path, keys: dict[str, type | tuple], *, fix: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"not readable JSON ({exc.__class__.__name__}); {fix}",
                        where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError(f"got {short(data)}; expected a JSON object; {fix}", where=str(path))
    for key, types in keys.items():
        v = data.get(key)
        if not isinstance(v, types) or isinstance(v, bool):
            raise UserError(f"got {short(v)}; expected {getattr(types, '__name__', 'a number')}; "
                            f"{fix}", where=str(path), field=key)
    return data


def read_run_folder(folder: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame | None]:
    """``(queries, summary, engine time series or None)`` of a ``clearsim run`` folder."""
    fix = f"rerun the scenario ('clearsim run {folder}/scenario.yaml --out NEW')"
    for name in ("summary.json", "queries.parquet"):
        if not (folder / name).is_file():
            if (folder / "sweep.json").is_file():
                raise UserError("this sweep has not finished (no results.parquet); finish it "
                                "with 'clearsim sweep SWEEP --out DIR --resume'", where=str(folder))
            raise UserError(f"not a run folder (no {name}; a run folder has summary.json and "
                            "queries.parquet, a sweep folder results.parquet)", where=str(folder))
    summary = read_json_object(folder / "summary.json", SUMMARY_KEYS, fix=fix)
    for i, r in enumerate(summary["results"]):
        lacking = [k for k in RESULT_KEYS if not isinstance(r, dict) or k not in r]
        if lacking or not isinstance(r["e2el_ms"], dict) or not isinstance(r["queue_wait_ms"], dict):
            raise UserError(f"results[{i}] lacks {', '.join(lacking) or 'latency mappings'}; {fix}",
                            where=str(folder / "summary.json"), field="results")
    queries = read_parquet(folder / "queries.parquet", QUERY_COLUMNS, fix=fix)
    ts = None
    if (folder / "timeseries.parquet").is_file():
        ts = read_parquet(folder / "timeseries.parquet", {}, fix=fix + " or remove the file")
    return queries, summary, ts


def read_sweep_folder(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(results, aggregate, manifest)`` of a finished ``clearsim sweep`` folder."""
    fix = "rebuild it with 'clearsim sweep SWEEP --out DIR --resume' after removing the file"
    for name in ("aggregate.parquet", "sweep.json"):
        if not (folder / name).is_file():
            raise UserError(f"missing {name}: not a complete sweep folder; {fix}",
                            where=str(folder))
    man = read_json_object(folder / "sweep.json", MANIFEST_KEYS, fix="not a clearsim sweep folder")
    res = read_parquet(folder / "results.parquet", RESULT_COLUMNS, fix=fix)
    agg = read_parquet(folder / "aggregate.parquet", AGGREGATE_COLUMNS, fix=fix)
    return res, agg, man


def check_out_file(path: str | os.PathLike) -> Path:
    """Refuse now a file path that could not be written later: an existing folder, under a
    file, a too-long name, or a parent folder that refuses new files (read-only, /proc)."""
    path = Path(path)
    if any(len(os.fsencode(p)) > 255 for p in path.parts):
        raise UserError("a path component is longer than 255 bytes", where=str(path)[:120] + "...")
    if path.is_dir():
        raise UserError("is a folder; give a file name such as report.html", where=str(path))
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create a file here: '{parent}' is a file", where=str(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".clearsim-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"cannot write into '{parent}' ({exc.strerror or exc.__class__.__name__})",
                        where=str(path)) from None
    return path


__all__ = ["check_out_file", "read_json_object", "read_parquet", "read_run_folder",
           "read_sweep_folder"]
