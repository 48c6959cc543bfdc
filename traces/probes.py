"""Forced-answer probes of reasoning runs: read, match to the runs, grade, reduce to numbers.

The reasoning recordings (``generations/*_t0.6_k3.jsonl``) come with a probe file
(``probes_<model>_<dataset>.csv.gz``: query_id, seed, token_position, probe_answer, is_certain,
probe_out_tokens), where every 64 tokens the run was interrupted and asked for its answer now,
and a targets file (query_id, target: the reference answer).  This module turns them into the
probe arrays of :class:`~traces.schema.TraceSet`; the answer *text* is graded and classed here
and then dropped: only numbers enter the set.

Grading uses the project's own grader (:class:`traces.grading.MathGrader`, math-verify)
and is cached per distinct (reference, answer) pair, i.e. per (query, answer) string, so the
~540,000 probes need only ~40,000 gradings (fewer when one cache serves several models).

**Answer classes** (``probe_answer``), per query, ids in order of first appearance:

* ``-1``: no answer: empty, no letter or digit in it (``?``, ``...``), or math-verify parses
  nothing from it;
* one id for every answer the grader finds equivalent to the reference (so all correct
  answers agree with each other);
* otherwise one id per distinct canonical form: math-verify's parse of the answer (its first
  value, e.g. a sympy expression) printed as text, so ``\\frac{1}{2}`` and ``1/2`` share an
  id, and textual variants of one expression do too.  Two wrong answers that are equal only
  after algebra the parser does not do (``0.5`` vs ``1/2``) keep two ids: agreement is then
  under-, never over-counted.

**Incomplete data** is counted and reported in the set's metadata, never silently zeroed:

* a run whose probes extend past the run's own end (the source's probes belong to another
  trajectory, seen for one seed of one model) has its probes dropped (``runs_mismatched``);
* a run with no probes keeps none (``runs_without_probes``); under forced-answer it then
  answers only at its own end, as under the hard cap.

Broken files (a probe whose query/seed is not a run of the generations file, a query without
a target, a reference math-verify cannot parse, a malformed row) raise one
:class:`~sim.foundation.errors.UserError` naming the file and row.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import numpy as np

from sim.foundation.errors import UserError

PROBE_COLUMNS = ("query_id", "seed", "token_position", "probe_answer", "is_certain",
                 "probe_out_tokens")
_HAS_ALNUM = re.compile(r"[0-9A-Za-z]")
_BOOL = {"True": True, "true": True, "1": True, "False": False, "false": False, "0": False}

CLASS_RULE = ("per query: -1 = empty / no letter or digit / unparseable; one id for all answers "
              "math-verify finds equivalent to the reference; else one id per math-verify "
              "canonical form (first parsed value as text)")


class ProbeGrader:
    """The project's math grader, cached per (reference, answer) and per answer's class key.

    One instance may serve several imports (the embedded sets share queries across models).
    ``calls`` counts real gradings, ``lookups`` every request, for the report.
    """

    def __init__(self, grader=None) -> None:
        if grader is None:
            from traces.grading import MathGrader  # math-verify: imported only here

            grader = MathGrader()
        self.grader = grader
        self._verdict: dict[tuple[str, str], bool] = {}
        self._key: dict[str, str | None] = {}
        self.calls = 0
        self.lookups = 0

    def correct(self, answer: str, reference: str) -> bool:
        """The grader's verdict on ``answer`` against ``reference`` (cached)."""
        self.lookups += 1
        k = (reference, answer)
        hit = self._verdict.get(k)
        if hit is None:
            self.calls += 1
            hit = self._verdict[k] = bool(self.class_key(answer) is not None
                                          and self.grader.match(answer, reference))
        return hit

    def class_key(self, answer: str) -> str | None:
        """Canonical form of an answer for classing; None when it states no answer."""
        if answer in self._key:
            return self._key[answer]
        key = None
        if _HAS_ALNUM.search(answer):
            parsed = self.parse(answer)
            if parsed:
                key = str(parsed[0])
        self._key[answer] = key
        return key

    def parse(self, text: str) -> list:
        """math-verify's parse of ``text`` as a boxed answer (as the grader parses it)."""
        import math_verify  # noqa: PLC0415 - the grader above already required it

        return math_verify.parse("\\boxed{" + text + "}")

    def describe(self) -> dict:
        return {"name": self.grader.name,
                "detail": self.grader.detail.split(" compared by ", 1)[-1].join(
                    ["each probe answer, as \\boxed{answer}, compared with the reference by ", ""]),
                "cache": "per (reference, answer) string pair"}


# ----------------------------------------------------------------------------- files
def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _rows(path: Path, columns: tuple[str, ...]):
    """(line number, row dict) of a CSV file (optionally gzipped) with these columns."""
    if not path.is_file():
        raise UserError("file not found", where=str(path))
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise UserError("empty file; expected a CSV header", where=str(path))
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(f"missing column(s) {', '.join(missing)}; expected "
                                f"{', '.join(columns)}", where=f"{path}:1")
            idx = [header.index(c) for c in columns]
            for row in reader:
                lineno = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise UserError(f"{len(row)} fields, header has {len(header)}",
                                    where=f"{path}:{lineno}")
                yield lineno, {c: row[i] for c, i in zip(columns, idx)}
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read ({type(exc).__name__}); the file may be truncated or "
                        "corrupt", where=str(path)) from None


def read_targets(path: str | Path) -> dict[str, tuple[int, str]]:
    """query_id -> (line number, reference answer) from a targets CSV."""
    path = Path(path)
    out: dict[str, tuple[int, str]] = {}
    for lineno, row in _rows(path, ("query_id", "target")):
        qid = row["query_id"]
        if qid in out:
            raise UserError(f"duplicate query_id {qid!r} (first on line {out[qid][0]})",
                            where=f"{path}:{lineno}", field="query_id")
        out[qid] = (lineno, row["target"])
    return out


def _int(v: str, where: str, field: str, lo: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise UserError(f"got {v!r}; expected an integer >= {lo}", where=where, field=field) from None
    if n < lo:
        raise UserError(f"got {n}; expected an integer >= {lo}", where=where, field=field)
    return n


def read_probes(path: str | Path, runs: dict[tuple[str, int], int], gen_file: str) -> dict:
    """The probe rows, checked and grouped by run.

    ``runs`` maps (query_id, seed) of every run of the generations file to its flat sample
    index.  Returns ``{sample index: [(position, answer, certain, out_tokens), ...]}`` sorted
    by position.
    """
    path = Path(path)
    by_run: dict[int, list] = {}
    seen: dict[tuple, int] = {}
    for lineno, row in _rows(path, PROBE_COLUMNS):
        where = f"{path}:{lineno}"
        qid = row["query_id"]
        seed = _int(row["seed"], where, "seed", 0)
        s = runs.get((qid, seed))
        if s is None:
            raise UserError(f"no run with query_id {qid!r} and seed {seed} in {gen_file}; the "
                            "probe file belongs to another recording", where=where,
                            field="query_id")
        pos = _int(row["token_position"], where, "token_position", 1)
        key = (s, pos)
        if key in seen:
            raise UserError(f"duplicate probe of {qid} seed {seed} at {pos} tokens (first on "
                            f"line {seen[key]})", where=where, field="token_position")
        seen[key] = lineno
        cert = _BOOL.get(row["is_certain"])
        if cert is None:
            raise UserError(f"got {row['is_certain']!r}; expected True or False", where=where,
                            field="is_certain")
        out = _int(row["probe_out_tokens"], where, "probe_out_tokens", 0)
        by_run.setdefault(s, []).append((pos, row["probe_answer"], cert, out))
    if not by_run:
        raise UserError("no probes in file", where=str(path))
    for lst in by_run.values():
        lst.sort()
    return by_run


# ---------------------------------------------------------------------------- import
def attach_probes(records: list[dict], gen_path: Path, probes_path: str | Path,
                  targets_path: str | Path, grader: ProbeGrader | None = None) -> dict:
    """Add a ``probes`` dict to every sample of ``records`` (validated generations records
    carrying ``seed``); return the import report for the set's metadata."""
    grader = grader or ProbeGrader()
    probes_path, targets_path = Path(probes_path), Path(targets_path)
    runs: dict[tuple[str, int], int] = {}
    flat = []
    for line_i, rec in enumerate(records):
        for k, smp in enumerate(rec["samples"]):
            seed = smp.get("seed")
            if seed is None:
                raise UserError(f"{rec['query_id']} samples[{k}] has no seed: probes are matched "
                                "to runs by (query_id, seed)", where=str(gen_path),
                                field=f"samples[{k}].seed")
            if (rec["query_id"], seed) in runs:
                raise UserError(f"{rec['query_id']} has two samples with seed {seed}; probes "
                                "cannot be matched to runs", where=str(gen_path),
                                field=f"samples[{k}].seed")
            runs[(rec["query_id"], seed)] = len(flat)
            flat.append((rec, smp))
    by_run = read_probes(probes_path, runs, gen_path.name)
    targets = read_targets(targets_path)

    refs: dict[str, str] = {}
    for rec in records:
        qid = rec["query_id"]
        if qid not in targets:
            raise UserError(f"no target for query {qid!r} of {gen_path.name}", where=str(targets_path),
                            field="query_id")
        lineno, ref = targets[qid]
        if grader.class_key(ref) is None:  # empty, no letter or digit, or parses to nothing
            raise UserError(f"reference answer {ref!r} of {qid} cannot be parsed by math-verify; "
                            "fix the target", where=f"{targets_path}:{lineno}", field="target")
        refs[qid] = ref

    classes: dict[str, dict] = {}
    stats = {"runs": len(flat), "runs_without_probes": 0, "runs_mismatched": 0,
             "probes_read": sum(len(v) for v in by_run.values()), "probes_dropped": 0}
    last_agree = last_n = last_agree_done = last_n_done = 0
    for s, (rec, smp) in enumerate(flat):
        qid, ref = rec["query_id"], refs[rec["query_id"]]
        got = by_run.get(s, [])
        if got and got[-1][0] > smp["tokens"]:
            stats["runs_mismatched"] += 1
            stats["probes_dropped"] += len(got)
            got = []
        if not got:
            stats["runs_without_probes"] += 1
        cls = classes.setdefault(qid, {})
        pos, ans, cert, cor, out = [], [], [], [], []
        for p, text, c, o in got:
            ok = grader.correct(text, ref)
            key = grader.class_key(text)
            cid = -1 if key is None else cls.setdefault("\0ref" if ok else key, len(cls))
            pos.append(p), ans.append(cid), cert.append(c), cor.append(ok), out.append(o)
        smp["probes"] = {"position": pos, "answer": ans, "certain": cert, "correct": cor,
                         "out_tokens": out}
        if got:
            # the final answer text is not in the data: the last probe (within one probe
            # interval of the run's end) stands for it
            agree = cor[-1] == smp["correct"]
            last_n += 1
            last_agree += agree
            if not smp.get("truncated", False):
                last_n_done += 1
                last_agree_done += agree
    stats["runs_mismatched_note"] = (
        "runs whose probes extend past the run's own end (another trajectory's probes): "
        "their probes are dropped, the run kept without probes")
    stats["probes_kept"] = stats["probes_read"] - stats["probes_dropped"]
    stats["final_agreement"] = {
        "measured_as": "grader's verdict on the run's last probe (at most 64 tokens before its "
                       "end; the final answer text is not in the data) vs the source's correct flag",
        "runs": last_n, "agree": last_agree,
        "rate": round(last_agree / last_n, 4) if last_n else None,
        "runs_finished": last_n_done, "agree_finished": last_agree_done,
        "rate_finished": round(last_agree_done / last_n_done, 4) if last_n_done else None,
    }
    return {"probes_file": probes_path.name, "targets_file": targets_path.name,
            "grader": grader.describe(), "answer_classes": CLASS_RULE, **stats}


def forced_gain(ts, budgets=(1024, 2048, 4096, 8192, 16384)) -> dict:
    """Mean accuracy under the hard cap and under forced answers at ``budgets``."""
    from traces.curves import accuracy_grid  # noqa: PLC0415 - curves imports the schema only

    hard = accuracy_grid(ts, budgets, semantics="hard-cap").mean(axis=0)
    forced = accuracy_grid(ts, budgets, semantics="forced-answer").mean(axis=0)
    return {"budgets": [int(b) for b in budgets],
            "hard_cap": [round(float(x), 4) for x in hard],
            "forced_answer": [round(float(x), 4) for x in forced]}
