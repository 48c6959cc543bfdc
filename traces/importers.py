"""Importers: turn recorded generations into a :class:`~traces.schema.TraceSet`.

Each importer validates every line before anything is built, so a bad file raises one
:class:`~sim.errors.UserError` naming the file, line and field, and nothing is imported half-way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim.errors import UserError
from traces.schema import TraceSet


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_generations_record(rec, where: str) -> dict:
    """Validate one JSON line of the ``generations`` format; return the normalised record."""
    if not isinstance(rec, dict):
        raise UserError("expected a JSON object per line", where=where)

    def need(name, ok, allowed):
        if name not in rec:
            raise UserError(f"missing; expected {allowed}", where=where, field=name)
        if not ok(rec[name]):
            raise UserError(f"got {rec[name]!r}; expected {allowed}", where=where, field=name)
        return rec[name]

    qid = need("query_id", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    dataset = need("dataset", lambda v: isinstance(v, str) and v != "", "a non-empty string")
    level = rec.get("level")
    if level is not None and not _is_int(level):
        raise UserError(f"got {level!r}; expected an integer or null", where=where, field="level")
    subject = rec.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise UserError(f"got {subject!r}; expected a string or null", where=where, field="subject")
    prompt = need("prompt_tokens", lambda v: _is_int(v) and v >= 0, "a non-negative integer")
    cap = rec.get("max_tokens")
    if cap is not None and not (_is_int(cap) and cap > 0):
        raise UserError(
            f"got {cap!r}; expected a positive integer or null", where=where, field="max_tokens"
        )
    samples = need("samples", lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list")
    out = []
    for k, s in enumerate(samples):
        f = f"samples[{k}]"
        if not isinstance(s, dict):
            raise UserError("expected an object with tokens and correct", where=where, field=f)
        tok = s.get("tokens")
        if not (_is_int(tok) and tok >= 0):
            raise UserError(
                f"got {tok!r}; expected a non-negative integer", where=where, field=f"{f}.tokens"
            )
        cor = s.get("correct")
        if not isinstance(cor, bool):
            raise UserError(
                f"got {cor!r}; expected true or false", where=where, field=f"{f}.correct"
            )
        trunc = s.get("truncated", False)
        if not isinstance(trunc, bool):
            raise UserError(
                f"got {trunc!r}; expected true or false", where=where, field=f"{f}.truncated"
            )
        out.append({"tokens": tok, "correct": cor, "truncated": trunc})
    return {
        "query_id": qid,
        "dataset": dataset,
        "level": level,
        "subject": subject,
        "prompt_tokens": prompt,
        "max_tokens": cap,
        "samples": out,
    }


def import_generations(path: str | os.PathLike, name: str, meta: dict | None = None) -> TraceSet:
    """Read a ``generations`` JSONL file (one query per line, see shared/data/README.md)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", where=str(path))
    records: list[dict] = []
    seen: dict[str, int] = {}
    try:
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                where = f"{path}:{lineno}"
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"not valid JSON ({exc.msg}); the file may be truncated or corrupt",
                        where=where,
                    ) from None
                rec = _check_generations_record(rec, where)
                if rec["query_id"] in seen:
                    raise UserError(
                        f"duplicate query id {rec['query_id']!r} (first on line "
                        f"{seen[rec['query_id']]})",
                        where=where,
                        field="query_id",
                    )
                seen[rec["query_id"]] = lineno
                records.append(rec)
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text; expected JSON lines", where=str(path)) from None
    if not records:
        raise UserError("no queries in file", where=str(path))
    info = {"format": "generations", "source_file": path.name}
    info.update(meta or {})
    return TraceSet.from_records(name, info, records)
