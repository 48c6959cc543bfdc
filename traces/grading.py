"""Grading a completion against a reference answer: extraction, then comparison.

Three graders, chosen with ``--grader``:

* ``math`` (default for math500, aime24, amc23 and custom files): the answer is the content of the
  last ``\\boxed{...}`` (the default system prompt asks for it; Qwen2.5-Math's evaluation harness
  reads the same), else the text after "final answer is"/"the answer is"; it is compared with the
  reference by **math-verify** (``math_verify.parse`` + ``math_verify.verify``: symbolic and
  numeric equivalence, so ``\\frac12`` equals ``0.5`` and ``(3, \\pi/2)`` equals
  ``\\left( 3, \\frac{\\pi}{2} \\right)``).  math-verify lives in the ``collect`` extra and is
  imported only when this grader is used.  It times out through ``signal.alarm``, so it must run
  in the main thread: the collector grades there, never in its HTTP worker threads.
* ``numeric`` (default for gsm8k): exact numeric match of the extracted number (last
  ``\\boxed{}``, else the ``#### N`` line of GSM8K-style solutions, else "the answer is N", else
  the last number in the text) with the reference, as exact fractions, so ``18.00`` equals
  ``18`` and ``1,000`` equals ``1000``.
* ``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION``: a hook for other tasks.  It is called as
  ``FUNCTION(completion_text, reference_answer)`` and returns either a bool or a pair
  ``(extracted_answer_or_None, bool)``.

:func:`perturb` makes a wrong answer from a right one; the grading report
(:mod:`traces.collect.grading_report`) uses it to check the grader rejects near misses.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from fractions import Fraction
from pathlib import Path
from typing import Callable

from sim.foundation.errors import UserError

#: Extracted answers kept in the sidecar are cut to this many characters.
ANSWER_CHARS = 64

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+?)\s*(?:$|\n|\.(?:\s|$))",
    flags=re.IGNORECASE,
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; else None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for k in range(start, len(text)):
            c = text[k]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:k].strip()
        # unbalanced (e.g. a truncated completion): try the previous one
    return None


def _answer_is(text: str) -> str | None:
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    ans = found[-1].strip().strip("$").strip().rstrip(".,;").strip()
    return ans or None


_EMPHASIS = re.compile(r"\\(?:textbf|mathbf|bf|boldsymbol)\s*\{(.*)\}", flags=re.DOTALL)
_PAREN_NUMBER = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*\)")


def _unwrap(answer: str) -> str:
    """Drop bold wrappers, a final full stop and the parentheses of a lone number.

    ``\\textbf{(073)}`` is ``073`` and ``104.`` is ``104``.

    AoPS-style solutions (and models trained on them) write the final answer so; math-verify
    would compare the wrapped text as a string and miss the number.
    """
    while (m := _EMPHASIS.fullmatch(answer.strip())) is not None:
        answer = m.group(1)
    answer = answer.strip().removesuffix(".").strip()  # a sentence's full stop inside the box
    m = _PAREN_NUMBER.fullmatch(answer)
    return m.group(1) if m else answer


def extract_math_answer(text: str) -> str | None:
    """The answer a math completion commits to, or None when it states none."""
    boxed = last_boxed(text)
    answer = boxed if boxed is not None else _answer_is(text)
    return None if answer is None else _unwrap(answer)


def _clean_number_text(s: str) -> str:
    s = s.replace("\\!", "").replace("\\,", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", s)
    return re.sub(r"(?<=\d),(?=\d{3}(?:\D|$))", "", s)


def to_number(s: str | None) -> Fraction | None:
    """The last number written in ``s`` as an exact fraction (None if there is none)."""
    if s is None:
        return None
    found = _NUMBER.findall(_clean_number_text(s))
    if not found:
        return None
    try:
        return Fraction(found[-1])
    except (ValueError, ZeroDivisionError):
        return None


def extract_numeric_answer(text: str) -> str | None:
    """The number a completion answers with: boxed, '#### N', 'the answer is N', or the last one."""
    for candidate in (last_boxed(text), _after_hashes(text), _answer_is(text)):
        if candidate is not None and to_number(candidate) is not None:
            return candidate
    found = _NUMBER.findall(_clean_number_text(text))
    return found[-1] if found else None


def _after_hashes(text: str) -> str | None:
    if "####" not in text:
        return None
    tail = text.rsplit("####", 1)[1].strip()
    return tail.splitlines()[0] if tail else None


def short(answer: str | None) -> str | None:
    """What the sidecar keeps of an extracted answer: at most ANSWER_CHARS characters."""
    if answer is None:
        return None
    answer = " ".join(answer.split())
    return answer if len(answer) <= ANSWER_CHARS else answer[: ANSWER_CHARS - 1] + "…"


class Grader:
    """Extract an answer from a completion and decide whether it matches the reference."""

    name = "base"
    detail = ""

    def extract(self, text: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def match(self, answer: str | None, reference: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def grade(self, text: str, reference: str) -> tuple[str | None, bool]:
        answer = self.extract(text)
        return answer, bool(answer is not None and self.match(answer, reference))

    def describe(self) -> dict:
        return {"name": self.name, "detail": self.detail}


class NumericGrader(Grader):
    name = "numeric"
    detail = (
        "exact numeric match (as fractions) of the last \\boxed{}, else '#### N', else "
        "'the answer is N', else the last number"
    )

    def extract(self, text: str) -> str | None:
        return extract_numeric_answer(text)

    def match(self, answer: str | None, reference: str) -> bool:
        got, want = to_number(answer), to_number(reference)
        return got is not None and want is not None and got == want


class MathGrader(Grader):
    name = "math"

    def __init__(self) -> None:
        try:
            import math_verify  # noqa: PLC0415 - optional, only for this grader
        except ImportError:
            raise UserError(
                "the 'math' grader needs math-verify: pip install 'clearsim[collect]' "
                "(or pip install math-verify), or pass --grader numeric",
                field="--grader",
            ) from None
        self._mv = math_verify
        version = getattr(math_verify, "__version__", None)
        if version is None:
            try:
                from importlib.metadata import version as _v  # noqa: PLC0415

                version = _v("math-verify")
            except Exception:  # noqa: BLE001 - provenance only
                version = "unknown"
        self.detail = (
            f"last \\boxed{{}} (else 'the answer is ...') compared by math-verify {version} "
            "(parse + verify: symbolic and numeric equivalence)"
        )
        self._gold: dict[str, list] = {}

    def extract(self, text: str) -> str | None:
        return extract_math_answer(text)

    def match(self, answer: str | None, reference: str) -> bool:
        if answer is None:
            return False
        gold = self._gold.get(reference)
        if gold is None:
            gold = self._gold[reference] = self._mv.parse("\\boxed{" + reference + "}")
        pred = self._mv.parse("\\boxed{" + answer + "}")
        if not gold or not pred:
            return False
        return bool(self._mv.verify(gold, pred))


class CustomGrader(Grader):
    """A user's function ``fn(text, reference) -> bool | (answer, bool)``."""

    def __init__(self, spec: str, fn: Callable) -> None:
        self.name = spec
        self.detail = f"custom hook {spec}(completion_text, reference_answer)"
        self._fn = fn

    def extract(self, text: str) -> str | None:  # the hook extracts for itself
        return None

    def grade(self, text: str, reference: str) -> tuple[str | None, bool]:
        out = self._fn(text, reference)
        if isinstance(out, bool):
            return None, out
        if (
            isinstance(out, tuple)
            and len(out) == 2
            and isinstance(out[1], bool)
            and (out[0] is None or isinstance(out[0], str))
        ):
            return out
        raise UserError(
            f"grader hook returned {out!r}; it must return a bool or (answer or None, bool)",
            field="--grader",
        )


def _load_hook(spec: str) -> Callable:
    target, _, func = spec.rpartition(":")
    if not target or not func:
        raise UserError(
            f"got {spec!r}; expected math, numeric, MODULE:FUNCTION or path/to/file.py:FUNCTION",
            field="--grader",
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UserError("grader file not found", where=target, field="--grader")
        mod_spec = importlib.util.spec_from_file_location(f"clearsim_grader_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code failed to import
            raise UserError(
                f"could not import the grader ({type(exc).__name__}: {exc})",
                where=target,
                field="--grader",
            ) from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UserError(
                f"could not import module {target!r} ({exc}); is it on PYTHONPATH?",
                field="--grader",
            ) from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UserError(f"{target} has no function {func!r}", field="--grader")
    return fn


def make_grader(spec: str) -> Grader:
    """``math``, ``numeric`` or a ``MODULE:FUNCTION`` / ``file.py:FUNCTION`` hook."""
    if spec == "math":
        return MathGrader()
    if spec == "numeric":
        return NumericGrader()
    return CustomGrader(spec, _load_hook(spec))


_INT = re.compile(r"\d+")


def perturb(answer: str) -> str:
    """A near miss of ``answer``: its first integer literal plus one, else ``answer + 1``.

    The first literal, not the last: the last is often a base subscript (``52_8``) or a unit's
    exponent (``15\\mbox{ cm}^2``), whose change leaves the value the grader compares intact.
    """
    m = _INT.search(answer)
    if m:
        return answer[: m.start()] + str(int(m.group(0)) + 1) + answer[m.end():]
    return f"{answer}+1"
