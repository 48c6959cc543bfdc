"""Importers: turn recorded generations into a :class:`~traces.schema.TraceSet`.

Each importer validates every line before anything is built, so a bad file raises one
:class:`~sim.foundation.errors.UserError` naming the file, line and field, and nothing is imported half-way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sim.foundation.errors import UserError
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
        seed = s.get("seed")
        if seed is not None and not (_is_int(seed) and seed >= 0):
            raise UserError(
                f"got {seed!r}; expected a non-negative integer or null", where=where,
                field=f"{f}.seed"
            )
        out.append({"tokens": tok, "correct": cor, "truncated": trunc, "seed": seed})
    return {
        "query_id": qid,
        "dataset": dataset,
        "level": level,
        "subject": subject,
        "prompt_tokens": prompt,
        "max_tokens": cap,
        "samples": out,
    }


def _read_json_lines(path: Path, check, key: str, key_name: str) -> list[dict]:
    """Every non-blank line of a JSONL file, each validated by ``check(record, where)``; a bad
    line, a duplicate ``key`` or an empty file raises naming the file, line and field."""
    records: list[dict] = []
    seen: dict = {}
    try:
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                where = f"{path}:{lineno}"
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"not valid JSON ({exc.msg}); the file may be truncated or "
                                    "corrupt", where=where) from None
                rec = check(rec, where)
                if rec[key] in seen:
                    raise UserError(f"duplicate {key_name} {rec[key]!r} (first on line "
                                    f"{seen[rec[key]]})", where=where, field=key)
                seen[rec[key]] = lineno
                records.append(rec)
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text; expected JSON lines", where=str(path)) from None
    if not records:
        raise UserError("no queries in file", where=str(path))
    return records


def import_generations(path: str | os.PathLike, name: str, meta: dict | None = None, *,
                       probes: str | os.PathLike | None = None,
                       targets: str | os.PathLike | None = None, grader=None) -> TraceSet:
    """Read a ``generations`` JSONL file (one query per line, see shared/data/README.md).

    With ``probes`` (a ``probes_<model>_<dataset>.csv.gz`` file) and ``targets`` (the
    reference answers), every run also gets its forced-answer probes, graded at import by the
    math grader (see :mod:`traces.probes`; ``grader`` is a shared
    :class:`~traces.probes.ProbeGrader` cache).  The import report (counts, skips, grader
    agreement with the source, forced-answer gain) goes into the set's ``meta["probes"]``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", where=str(path))
    if (probes is None) != (targets is None):
        raise UserError("probes need their reference answers: give both --probes and --targets",
                        field="--targets" if targets is None else "--probes")
    records = _read_json_lines(path, _check_generations_record, "query_id", "query id")
    info = {"format": "generations", "source_file": path.name}
    info.update(meta or {})
    if probes is None:
        return TraceSet.from_records(name, info, records)
    from traces.probes import attach_probes, forced_gain  # noqa: PLC0415 - needs math-verify

    report = attach_probes(records, path, probes, targets, grader)
    ts = TraceSet.from_records(name, info, records)
    ts.meta["probes"] = {**report, "gain": forced_gain(ts)}
    return ts


# ------------------------------------------------------------------ qwen-harness
def load_tokenizer(name: str):
    """A Hugging Face tokenizer by name (needs ``transformers``; local cache or the Hub)."""
    try:
        from transformers import AutoTokenizer  # optional: only this importer needs it
    except ImportError:
        raise UserError(
            f"counting tokens with '{name}' needs the 'transformers' package "
            "(pip install transformers); it is not installed",
            field="--tokenizer",
        ) from None
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the user's name or network
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"cannot load tokenizer '{name}' ({type(exc).__name__}: {first[:160]})",
                        field="--tokenizer") from None


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    """Completion lengths: tokens of each text without special tokens (BOS etc.)."""
    return [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]


def _harness_level(v, where: str):
    if v is None or (isinstance(v, str) and v.strip() in ("", "None")):
        return None
    if _is_int(v):
        return v
    if isinstance(v, str):
        text = v.strip()
        if text.lower().startswith("level"):
            text = text[5:].strip()
        if text.isdigit():
            return int(text)
    raise UserError(f"got {v!r}; expected an integer, 'Level N' or null", where=where, field="level")


#: Record fields that hold a problem's subject, by benchmark (MATH, Minerva, OlympiadBench).
SUBJECT_FIELDS = ("subject", "type", "subfield")


def _check_harness_record(rec, where: str) -> dict:
    """Validate one line of the Qwen2.5-Math evaluation output; keep texts only for counting."""
    if not isinstance(rec, dict):
        raise UserError("expected a JSON object per line", where=where)
    idx = rec.get("idx")
    if not ((_is_int(idx) and idx >= 0) or (isinstance(idx, str) and idx)):
        raise UserError(f"got {idx!r}; expected a non-negative integer or a non-empty string",
                        where=where, field="idx")
    question = rec.get("question")
    if not isinstance(question, str):
        raise UserError(f"got {type(question).__name__}; expected the problem text (a string)",
                        where=where, field="question")
    code = rec.get("code")
    if not isinstance(code, list) or not code:
        raise UserError("expected a non-empty list of completions", where=where, field="code")
    for k, c in enumerate(code):
        if not isinstance(c, str):
            raise UserError(f"got {type(c).__name__}; expected a completion text", where=where,
                            field=f"code[{k}]")
    score = rec.get("score")
    if not isinstance(score, list) or len(score) != len(code):
        n = len(score) if isinstance(score, list) else type(score).__name__
        raise UserError(f"got {n}; expected a list of {len(code)} true/false (one per completion)",
                        where=where, field="score")
    for k, s in enumerate(score):
        if not isinstance(s, bool):
            raise UserError(f"got {s!r}; expected true or false", where=where, field=f"score[{k}]")
    subject = next((rec[f] for f in SUBJECT_FIELDS if isinstance(rec.get(f), str) and rec[f]), None)
    return {"idx": idx, "question": question, "code": code, "score": score,
            "level": _harness_level(rec.get("level"), where), "subject": subject}


def import_qwen_harness(path: str | os.PathLike, name: str, tokenizer, *, dataset: str | None = None,
                        max_tokens: int | None = None, meta: dict | None = None) -> TraceSet:
    """Read the Qwen2.5-Math evaluation harness output (JSONL: idx, question, level, code[k],
    score[k]); count tokens of every completion and of the question with ``tokenizer``.

    ``tokenizer`` is an object with ``encode(text, add_special_tokens=False)`` (a Hugging Face
    tokenizer, see :func:`load_tokenizer`).  ``dataset`` defaults to the part of the file name
    after ``__`` (``Model__dataset.jsonl``), else the file name.  With ``max_tokens`` (the
    recording cap), a completion of that many tokens or more is marked truncated.  Only the
    counts are kept: no text enters the trace set.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", where=str(path))
    if tokenizer is None:
        raise UserError("the qwen-harness format stores texts: counting their tokens needs "
                        "--tokenizer HF_NAME (e.g. Qwen/Qwen2.5-Math-7B-Instruct)",
                        field="--tokenizer")
    if max_tokens is not None and not (_is_int(max_tokens) and max_tokens > 0):
        raise UserError(f"got {max_tokens!r}; expected a positive integer", field="--max-tokens")
    dataset = dataset or (path.stem.split("__", 1)[1] if "__" in path.stem else path.stem)
    rows = _read_json_lines(path, _check_harness_record, "idx", "idx")
    # every line is valid: only now count tokens (the slow part), texts dropped right after
    records = []
    for rec in rows:
        lengths = count_tokens(tokenizer, rec["code"])
        records.append({
            "query_id": f"{dataset}/{rec['idx']}",
            "dataset": dataset,
            "level": rec["level"],
            "subject": rec["subject"],
            "prompt_tokens": count_tokens(tokenizer, [rec["question"]])[0],
            "max_tokens": max_tokens,
            "samples": [{"tokens": n, "correct": s,
                         "truncated": max_tokens is not None and n >= max_tokens}
                        for n, s in zip(lengths, rec["score"])],
        })
    info = {"format": "qwen-harness", "source_file": path.name,
            "tokens": f"completion tokens counted with {getattr(tokenizer, 'name_or_path', None) or type(tokenizer).__name__}; "
                      "prompt tokens = the question text alone (no chat template)"}
    info.update(meta or {})
    return TraceSet.from_records(name, info, records)


#: ``clearsim traces import`` formats.  ``clearsim``: a trace file in the project's own format
#: (what ``clearsim traces collect`` and ``traces synth`` write), e.g. collected on a GPU machine.
FORMATS = ("generations", "qwen-harness", "clearsim")
