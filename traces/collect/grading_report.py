"""How accurate is the grader?  Grade the reference solutions and near misses of each problem set.

Run ``python -m traces.collect.grading_report ../shared/data/problems`` (add ``--out
docs/grading.md`` to rewrite the documented table).  For every named set found in the folder, each
problem is graded three ways with that set's default grader:

* its own **reference solution** (the worked solution text where the set has one: GSM8K's answer
  field, MATH-500's and AIME's ``solution``; AMC 2023 has none, so this column repeats the next),
  which must grade **correct**: this exercises answer extraction on real worked text;
* its **reference answer** written as ``\\boxed{answer}``, which must grade **correct**: this
  exercises the comparison alone;
* a **perturbed answer** (:func:`traces.grading.perturb`: first integer + 1), which must
  grade **wrong**.

Misses are listed by query id only: no problem text or answer is ever written out.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim.foundation.errors import UserError
from traces.grading import make_grader, perturb
from traces.collect.problems import KNOWN_SETS, load_problems

COMMAND = "python -m traces.collect.grading_report ../shared/data/problems --out docs/grading.md"


@dataclass
class SetReport:
    name: str
    grader: str
    n: int
    has_solutions: bool
    solution_ok: int = 0
    answer_ok: int = 0
    perturbed_wrong: int = 0
    solution_misses: list[str] = field(default_factory=list)
    answer_misses: list[str] = field(default_factory=list)
    perturbed_misses: list[str] = field(default_factory=list)
    seconds: float = 0.0


def grade_set(name: str, problems_dir: str | Path, limit: int | None = None) -> SetReport:
    """Grade one named set's references and near misses (see the module docstring)."""
    pset = load_problems(name, problems_dir=problems_dir, limit=limit)
    grader = make_grader(pset.default_grader)
    has_solutions = any(p.solution for p in pset.problems)
    rep = SetReport(name, grader.name, len(pset.problems), has_solutions)
    t0 = time.perf_counter()
    for p in pset.problems:
        boxed = "\\boxed{" + p.reference + "}"
        if grader.grade(p.solution or boxed, p.reference)[1]:
            rep.solution_ok += 1
        else:
            rep.solution_misses.append(p.query_id)
        if grader.grade(boxed, p.reference)[1]:
            rep.answer_ok += 1
        else:
            rep.answer_misses.append(p.query_id)
        if not grader.grade("\\boxed{" + perturb(p.reference) + "}", p.reference)[1]:
            rep.perturbed_wrong += 1
        else:
            rep.perturbed_misses.append(p.query_id)
    rep.seconds = time.perf_counter() - t0
    return rep


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.1f}%)"


def render(reports: list[SetReport], command: str = COMMAND) -> str:
    lines = [
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "| set | grader | problems | reference solution graded correct | reference answer "
        "graded correct | perturbed answer graded wrong |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        sol = _pct(r.solution_ok, r.n) if r.has_solutions else "n/a (no solutions in the set)"
        lines.append(
            f"| {r.name} | {r.grader} | {r.n} | {sol} | {_pct(r.answer_ok, r.n)} | "
            f"{_pct(r.perturbed_wrong, r.n)} |"
        )
    misses = []
    for r in reports:
        for label, ids in (
            ("reference solution graded wrong", r.solution_misses if r.has_solutions else []),
            ("reference answer graded wrong", r.answer_misses),
            ("perturbed answer graded correct", r.perturbed_misses),
        ):
            if ids:
                shown = ", ".join(ids[:40]) + (f", … ({len(ids) - 40} more)" if len(ids) > 40 else "")
                misses.append(f"- {r.name}, {label}: {shown}")
    if misses:
        lines += ["", "Misses (query ids only):", ""] + misses
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m traces.collect.grading_report",
        description="Grade each problem set's reference solutions and perturbed answers.",
    )
    ap.add_argument("problems_dir", help="folder holding gsm8k_test.jsonl, math500_test.jsonl, ...")
    ap.add_argument("--out", help="write the table into this Markdown file (its section only)")
    ap.add_argument("--limit", type=int, default=None, help="grade only the first N of each set")
    args = ap.parse_args(argv)
    reports = []
    try:
        for name in KNOWN_SETS:
            if any((Path(args.problems_dir) / f).is_file() for f in KNOWN_SETS[name].files):
                reports.append(grade_set(name, args.problems_dir, limit=args.limit))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not reports:
        print(f"error: {args.problems_dir}: no known problem set files found", file=sys.stderr)
        return 2
    table = render(reports)
    if args.out:
        _write_section(Path(args.out), table)
    sys.stdout.write(table)
    return 0


BEGIN = "<!-- grading-report:begin -->"
END = "<!-- grading-report:end -->"


def _write_section(path: Path, table: str) -> None:
    """Replace the generated section between the markers, keeping the hand-written prose."""
    text = path.read_text(encoding="utf-8") if path.is_file() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: markers {BEGIN} / {END} not found; add them where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
