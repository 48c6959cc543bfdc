"""Answer extraction, the numeric and math graders, custom hooks, and the grading report."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from sim.foundation.errors import UserError
from traces.grading import (
    ANSWER_CHARS,
    extract_math_answer,
    extract_numeric_answer,
    last_boxed,
    make_grader,
    perturb,
    short,
    to_number,
)


def test_last_boxed_balances_braces_and_takes_the_last():
    text = r"first \boxed{1} then \boxed{\frac{a}{b^{2}}} done"
    assert last_boxed(text) == r"\frac{a}{b^{2}}"
    assert last_boxed(r"\fbox{7}") == "7"
    assert last_boxed("no answer here") is None
    # a completion cut inside its box falls back to the previous complete one
    assert last_boxed(r"\boxed{3} and then \boxed{\frac{1}{") == "3"


def test_math_extraction_fallbacks_and_unwrapping():
    assert extract_math_answer("So the final answer is $42$.") == "42"
    assert extract_math_answer(r"$\boxed{\textbf{(073)}}$") == "073"
    assert extract_math_answer(r"$CE = \boxed{104.}$") == "104"
    assert extract_math_answer("I give up") is None


@pytest.mark.parametrize(
    "text, number",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", 18),
        (r"The total is \boxed{1,000} dollars", 1000),
        ("The answer is 18.00.", 18),
        (r"so \boxed{\$7.50}", 7.5),
        ("first 3 then 4 finally 5", 5),
        (r"\boxed{\frac{3}{4}}", 0.75),
    ],
)
def test_numeric_extraction(text, number):
    assert to_number(extract_numeric_answer(text)) == pytest.approx(number)


def test_numeric_grader_is_exact():
    g = make_grader("numeric")
    assert g.grade(r"... \boxed{18}", "18") == ("18", True)
    assert g.grade("#### 1,000", "1000")[1]
    assert not g.grade(r"\boxed{19}", "18")[1]
    assert not g.grade(r"\boxed{18.5}", "18")[1]
    assert g.grade("no number at all", "18") == (None, False)


def test_math_grader_uses_symbolic_equivalence():
    pytest.importorskip("math_verify")
    g = make_grader("math")
    assert g.grade(r"thus \boxed{\frac{1}{2}}", "0.5")[1]
    assert g.grade(r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)")[1]
    assert g.grade(r"\boxed{2\sqrt{2}}", r"\sqrt{8}")[1]
    assert not g.grade(r"\boxed{\frac{1}{3}}", "0.5")[1]
    assert not g.grade(r"\boxed{(3, \frac{\pi}{3})}", r"\left( 3, \frac{\pi}{2} \right)")[1]
    assert g.grade("no boxed answer", "0.5") == (None, False)
    assert "math-verify" in g.describe()["detail"]


def test_math_grader_without_math_verify_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(UserError, match=r"clearsim\[collect\]"):
        make_grader("math")


def test_custom_hook_from_a_module_and_a_file(tmp_path, monkeypatch):
    mod = types.ModuleType("my_graders")
    mod.exact = lambda text, ref: text.strip() == ref
    mod.pair = lambda text, ref: (text[:3], text.endswith(ref))
    mod.bad = lambda text, ref: "yes"
    monkeypatch.setitem(sys.modules, "my_graders", mod)
    assert make_grader("my_graders:exact").grade(" 7 ", "7") == (None, True)
    assert make_grader("my_graders:pair").grade("abc 7", "7") == ("abc", True)
    with pytest.raises(UserError, match="must return a bool"):
        make_grader("my_graders:bad").grade("x", "y")
    f = tmp_path / "g.py"
    f.write_text(textwrap.dedent("""
        def check(text, reference):
            return reference in text
    """))
    assert make_grader(f"{f}:check").grade("it is 42", "42") == (None, True)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nonsense", "expected math, numeric"),
        ("no_such_module_xyz:f", "could not import module"),
        ("json:no_such_function", "has no function"),
        ("missing_file.py:f", "grader file not found"),
    ],
)
def test_bad_grader_specs(spec, message):
    with pytest.raises(UserError, match=message):
        make_grader(spec)


def test_perturb_changes_the_value_not_a_subscript():
    assert perturb("52_8") == "53_8"
    assert perturb(r"15\mbox{ cm}^2") == r"16\mbox{ cm}^2"
    assert perturb("x=5") == "x=6"
    assert perturb(r"\text{Evelyn}") == r"\text{Evelyn}+1"


def test_short_answers_are_cut():
    assert short(None) is None
    assert short("a\n  b") == "a b"
    assert len(short("x" * 500)) == ANSWER_CHARS


def test_documented_grader_accuracy_holds(shared_data):
    """The report's guarantees on a slice of each shared set (the full run is docs/grading.md)."""
    pytest.importorskip("math_verify")
    from traces.collect.grading_report import grade_set, render

    reports = [grade_set(name, shared_data / "problems", limit=limit)
               for name, limit in (("gsm8k", 300), ("math500", 120), ("aime24", 30), ("amc23", 40))]
    for r in reports:
        assert r.answer_ok == r.n, (r.name, r.answer_misses)
        assert r.perturbed_wrong == r.n, (r.name, r.perturbed_misses)
    by = {r.name: r for r in reports}
    assert by["gsm8k"].solution_ok == by["gsm8k"].n
    assert by["math500"].solution_ok == by["math500"].n
    assert by["aime24"].solution_ok >= 29  # aime24/0's solution never states its answer
    table = render(reports)
    assert "| math500 | math | 120 |" in table and "aime24/0" in table
