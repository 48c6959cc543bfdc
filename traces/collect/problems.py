"""Problem sets for the collector: the four named benchmarks, or any JSONL file.

A problem set is loaded once, validated whole, and turned into :class:`Problem` objects with a
stable ``query_id`` (``"<dataset>/<row index>"``, the convention of the embedded traces), the
question text, the reference answer (normalised to a string) and, when the source has them,
level and subject.  Nothing here is ever written into a trace: only ids, level and subject are.

Named sets are looked up, in order, as a file in ``problems_dir`` (or ``$CLEARSIM_PROBLEMS_DIR``)
under the file names of the public copies in ``shared/data/problems``, then through the Hugging
Face ``datasets`` library when it is installed (the ``collect`` extra).  The dataset ids below are
the ones the public evaluation harnesses load (checked with the search tool): ``openai/gsm8k``
(config ``main``), ``HuggingFaceH4/MATH-500``, ``HuggingFaceH4/aime_2024``, ``math-ai/amc23``.

The set's *content hash* (sha256 over ids, questions and references) goes into provenance and the
resume fingerprint, so a resumed collection can tell when the problems changed under it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from sim.foundation.errors import UserError

PROBLEMS_DIR_ENV = "CLEARSIM_PROBLEMS_DIR"


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer (text stays in memory, never in a trace)."""

    query_id: str
    dataset: str
    question: str
    reference: str
    level: int | None = None
    subject: str | None = None
    #: A worked reference solution when the source has one (used by the grading report only).
    solution: str | None = None


@dataclass(frozen=True)
class KnownSet:
    """How to read one named benchmark, from a local copy or the Hugging Face hub."""

    name: str
    files: tuple[str, ...]
    question_field: str
    answer_field: str
    grader: str
    hf_id: str
    hf_config: str | None
    hf_split: str
    solution_field: str | None = None
    gsm8k_answer: bool = False


KNOWN_SETS: dict[str, KnownSet] = {
    "gsm8k": KnownSet(
        "gsm8k", ("gsm8k_test.jsonl", "gsm8k.jsonl"), "question", "answer", "numeric",
        "openai/gsm8k", "main", "test", solution_field="answer", gsm8k_answer=True,
    ),
    "math500": KnownSet(
        "math500", ("math500_test.jsonl", "math500.jsonl"), "problem", "answer", "math",
        "HuggingFaceH4/MATH-500", None, "test", solution_field="solution",
    ),
    "aime24": KnownSet(
        "aime24", ("aime24.jsonl", "aime24_test.jsonl"), "problem", "answer", "math",
        "HuggingFaceH4/aime_2024", None, "train", solution_field="solution",
    ),
    "amc23": KnownSet(
        "amc23", ("amc23.jsonl", "amc23_test.jsonl"), "question", "answer", "math",
        "math-ai/amc23", None, "test",
    ),
}


@dataclass
class ProblemSet:
    """The loaded problems plus where they came from (for provenance and resume checks)."""

    name: str
    problems: list[Problem]
    source: dict
    default_grader: str
    _hash: str | None = field(default=None, repr=False)

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            h = hashlib.sha256()
            for p in self.problems:
                for part in (p.query_id, p.question, p.reference):
                    h.update(part.encode("utf-8"))
                    h.update(b"\x00")
            self._hash = h.hexdigest()
        return self._hash


def _reference_text(value, *, where: str, field_name: str, gsm8k: bool) -> str:
    """Normalise a reference answer: numbers to their shortest exact text, GSM8K to the number."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise UserError(
            f"got {value!r}; expected the reference answer as a string or a number",
            where=where,
            field=field_name,
        )
    if isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    else:
        text = str(value).strip()
    if gsm8k:
        if "####" not in text:
            raise UserError(
                "a GSM8K answer must end with '#### N'; is this really GSM8K? load it as a "
                "plain JSONL file (give its path) with --answer-field instead",
                where=where,
                field=field_name,
            )
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    if not text:
        raise UserError("empty reference answer", where=where, field=field_name)
    return text


def _level(value) -> int | None:
    """MATH levels come as ints or as 'Level 3'; anything else is 'not stated'."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:level\s*)?(\d+)\s*", value, flags=re.IGNORECASE)
        if m:
            return int(m.group(1))
    return None


def _build(
    rows: list[tuple[str, dict]],
    *,
    dataset: str,
    question_field: str,
    answer_field: str,
    id_field: str | None,
    solution_field: str | None,
    gsm8k: bool,
    hint: str,
) -> list[Problem]:
    """Validate every row (``(where, record)`` pairs) before building anything."""
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for index, (where, rec) in enumerate(rows):
        if not isinstance(rec, dict):
            raise UserError("expected a JSON object per line", where=where)
        for name, what in ((question_field, "question"), (answer_field, "answer")):
            if name not in rec:
                fields = ", ".join(sorted(map(str, rec))) or "none"
                raise UserError(
                    f"missing (this record has fields: {fields}); name the {what} field with "
                    f"--{what}-field{hint}",
                    where=where,
                    field=name,
                )
        question = rec[question_field]
        if not isinstance(question, str) or not question.strip():
            raise UserError(
                f"got {question!r}; expected a non-empty question string",
                where=where,
                field=question_field,
            )
        reference = _reference_text(
            rec[answer_field], where=where, field_name=answer_field, gsm8k=gsm8k
        )
        if id_field is not None:
            if id_field not in rec:
                raise UserError(
                    "missing; every record needs an id when --id-field is given",
                    where=where,
                    field=id_field,
                )
            local_id = str(rec[id_field]).strip()
            if not local_id:
                raise UserError("empty id", where=where, field=id_field)
        else:
            local_id = str(index)
        qid = f"{dataset}/{local_id}"
        if qid in seen:
            raise UserError(
                f"duplicate id {local_id!r} (first at {seen[qid]}); ids must be unique",
                where=where,
                field=id_field or "id",
            )
        seen[qid] = where
        subject = rec.get("subject")
        solution = rec.get(solution_field) if solution_field else None
        problems.append(
            Problem(
                query_id=qid,
                dataset=dataset,
                question=question,
                reference=reference,
                level=_level(rec.get("level")),
                subject=subject if isinstance(subject, str) and subject else None,
                solution=solution if isinstance(solution, str) else None,
            )
        )
    if not problems:
        raise UserError("no problems in the set", where=rows[0][0] if rows else dataset)
    return problems


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []
    try:
        with path.open("r", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    rows.append((where, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(
                        f"not valid JSON ({exc.msg}); expected one JSON object per line",
                        where=where,
                    ) from None
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text; expected JSON lines", where=str(path)) from None
    if not rows:
        raise UserError("no problems in file", where=str(path))
    return rows


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_local(spec: KnownSet, problems_dir: str | os.PathLike | None) -> Path | None:
    dirs: list[Path] = []
    if problems_dir is not None:
        if not Path(problems_dir).is_dir():
            raise UserError(
                "problems directory not found", where=str(problems_dir), field="--problems-dir"
            )
        dirs.append(Path(problems_dir))
    if os.environ.get(PROBLEMS_DIR_ENV):
        dirs.append(Path(os.environ[PROBLEMS_DIR_ENV]))
    for d in dirs:
        for fname in spec.files:
            if (d / fname).is_file():
                return d / fname
    if problems_dir is not None:  # asked for local copies: do not fall back to a download
        raise UserError(
            f"no {' or '.join(spec.files)} here for problem set '{spec.name}'",
            where=str(problems_dir),
            field="--problems-dir",
        )
    return None


def _load_hf(spec: KnownSet) -> tuple[list[tuple[str, dict]], dict]:
    """Rows of a named set from the Hugging Face hub (needs the optional ``datasets``)."""
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported only when needed
    except ImportError:
        raise UserError(
            f"problem set '{spec.name}' not found locally: pass --problems-dir DIR holding "
            f"{spec.files[0]}, give a path to a JSONL file, or install the 'datasets' library "
            f"(pip install 'clearsim[collect]') to download {spec.hf_id}",
            field="--problems",
        ) from None
    args = (spec.hf_id, spec.hf_config) if spec.hf_config else (spec.hf_id,)
    try:
        ds = datasets.load_dataset(*args, split=spec.hf_split)
    except Exception as exc:  # noqa: BLE001 - network, auth or hub errors: report and stop
        raise UserError(
            f"could not load {spec.hf_id} with the datasets library ({type(exc).__name__}: "
            f"{exc}); download it yourself and pass --problems-dir",
            field="--problems",
        ) from None
    where = f"{spec.hf_id}[{spec.hf_split}]"
    rows = [(f"{where} row {i}", dict(r)) for i, r in enumerate(ds)]
    source = {
        "kind": "huggingface",
        "hf_id": spec.hf_id,
        "config": spec.hf_config,
        "split": spec.hf_split,
        "fingerprint": getattr(ds, "_fingerprint", None),
    }
    return rows, source


def known_set_names() -> list[str]:
    return sorted(KNOWN_SETS)


def load_problems(
    problems: str,
    *,
    problems_dir: str | os.PathLike | None = None,
    question_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    dataset_name: str | None = None,
    limit: int | None = None,
) -> ProblemSet:
    """Load a named set (gsm8k, math500, aime24, amc23) or a JSONL file of problems.

    ``question_field`` / ``answer_field`` / ``id_field`` override a named set's fields and are
    how a custom JSONL file is read (defaults ``question`` and ``answer``, ids by row index).
    ``limit`` keeps the first N problems (a smoke test on a GPU costs minutes, not hours).
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"got {limit!r}; expected a positive integer", field="--limit")
    spec = KNOWN_SETS.get(problems)
    path = Path(problems)
    if spec is None and not path.is_file():
        if path.suffix in (".jsonl", ".json") or os.sep in problems:
            raise UserError("problems file not found", where=problems, field="--problems")
        close = difflib.get_close_matches(problems, known_set_names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(
            f"unknown problem set '{problems}'; {hint}use one of "
            f"{', '.join(known_set_names())} or a path to a JSONL file",
            field="--problems",
        )

    if spec is not None:
        local = _find_local(spec, problems_dir)
        if local is not None:
            rows = _read_jsonl(local)
            source = {"kind": "file", "path": str(local), "sha256": _file_sha256(local)}
        else:
            rows, source = _load_hf(spec)
        name = spec.name
        dataset = dataset_name or spec.name
        default_grader = spec.grader
        q_field = question_field or spec.question_field
        a_field = answer_field or spec.answer_field
        solution_field = spec.solution_field
        gsm8k = spec.gsm8k_answer and answer_field is None
        hint = ""
    else:
        rows = _read_jsonl(path)
        source = {"kind": "file", "path": str(path), "sha256": _file_sha256(path)}
        name = path.stem
        dataset = dataset_name or path.stem
        default_grader = "math"
        q_field = question_field or "question"
        a_field = answer_field or "answer"
        solution_field = None
        gsm8k = False
        hint = " (this is a custom file)"

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dataset):
        raise UserError(
            f"dataset name {dataset!r} must be letters, digits, '.', '_' or '-'; "
            "pass --dataset-name",
            field="--dataset-name",
        )
    if limit is not None:
        rows = rows[:limit]
    loaded = _build(
        rows,
        dataset=dataset,
        question_field=q_field,
        answer_field=a_field,
        id_field=id_field,
        solution_field=solution_field,
        gsm8k=gsm8k,
        hint=hint,
    )
    source.update({"name": name, "question_field": q_field, "answer_field": a_field})
    if limit is not None:
        source["limit"] = limit
    return ProblemSet(name=name, problems=loaded, source=source, default_grader=default_grader)
