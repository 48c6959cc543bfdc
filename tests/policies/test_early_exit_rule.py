"""The Dynasor-style exit rule on hand-built probe sequences (sim.core.early_exit.outcomes):
where it exits, what the run costs (probe answer tokens included) and what it answers, and that
the decision is causal (probes after the exit point never change it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sim.core.early_exit import ExitRule, Probes, outcomes


def probes(runs):
    """Probes from a list of runs, each a list of (position, answer, certain, correct, out)."""
    counts = [len(r) for r in runs]
    off = np.zeros(len(runs) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    flat = [p for r in runs for p in r]
    col = lambda i, dt: np.array([p[i] for p in flat], dtype=dt)  # noqa: E731
    return Probes(off, col(0, np.int32), col(1, np.int32), col(2, bool), col(3, bool),
                  col(4, np.int32))


def seq(answers, *, certain=None, correct_answer=7, out=5, step=64):
    """One run's probes at 64, 128, ...: the given answer ids, graded correct iff == 7."""
    certain = certain or [False] * len(answers)
    return [((j + 1) * step, a, c, a == correct_answer, out)
            for j, (a, c) in enumerate(zip(answers, certain))]


def one(run, L, cap, rule, correct=True, semantics="hard-cap"):
    out = outcomes(probes([run]), np.array([0]), np.array([L]), np.array([correct]),
                   np.array([cap]), rule, semantics)
    return {f: getattr(out, f)[0] for f in ("exited", "exit_position", "tokens", "probe_tokens",
                                            "probes", "correct")}


def test_exit_at_kth_agreeing_probe():
    # answers 3, 7, 7, 7 ...: the third 7 (probe 4, position 256) completes k=3
    r = one(seq([3, 7, 7, 7, 7, 7]), L=400, cap=1000, rule=ExitRule(3))
    assert r["exited"] and r["exit_position"] == 256 and r["probes"] == 4
    assert r["probe_tokens"] == 4 * 5 and r["tokens"] == 256 + 20 and r["correct"]


def test_exit_answer_is_the_probe_verdict_not_the_run_verdict():
    # the run's own final answer is correct, but it agreed on a wrong answer (3) first
    r = one(seq([3, 3, 7, 7]), L=300, cap=1000, rule=ExitRule(2), correct=True)
    assert r["exited"] and r["exit_position"] == 128 and not r["correct"]


def test_unparseable_answers_never_agree():
    # -1 (empty) three times in a row is no agreement; an interruption resets the streak
    r = one(seq([-1, -1, -1, 5, -1, 5, 5]), L=1000, cap=1000, rule=ExitRule(2))
    assert r["exited"] and r["exit_position"] == 7 * 64


def test_certainty_counts_only_when_asked():
    run = seq([1, 2, 3, 4], certain=[True, True, False, True])
    assert not one(run, L=300, cap=1000, rule=ExitRule(2))["exited"]
    r = one(run, L=300, cap=1000, rule=ExitRule(2, certain=True))
    assert r["exited"] and r["exit_position"] == 128 and r["probes"] == 2
    # a break in certainty resets the count
    assert not one(run, L=300, cap=1000, rule=ExitRule(3, certain=True))["exited"]


def test_no_exit_pays_every_probe_taken():
    # no agreement; run ends at 300 (probes at 64..256 taken) with its own verdict
    r = one(seq([1, 2, 3, 4, 5]), L=300, cap=1000, rule=ExitRule(2), correct=True)
    assert not r["exited"] and r["exit_position"] == -1
    assert r["probes"] == 4 and r["probe_tokens"] == 20 and r["tokens"] == 300 + 20 and r["correct"]


def test_exit_beyond_cap_is_ignored():
    # the agreement completes at 256, but the cap is 200: probes at 64, 128, 192 are taken
    run = seq([1, 2, 7, 7, 7])
    r = one(run, L=400, cap=200, rule=ExitRule(2), correct=True)
    assert not r["exited"] and r["probes"] == 3 and r["tokens"] == 200 + 15
    assert not r["correct"]  # hard cap: a run cut at its cap is wrong
    # an exit exactly at the cap is not taken either (the run stops there anyway)
    assert not one(run, L=400, cap=256, rule=ExitRule(2))["exited"]
    assert one(run, L=400, cap=257, rule=ExitRule(2))["exit_position"] == 256


def test_exit_beyond_the_runs_end_is_ignored():
    r = one(seq([1, 7, 7]), L=150, cap=1000, rule=ExitRule(2), correct=False)
    assert not r["exited"] and r["probes"] == 2 and r["tokens"] == 150 + 10 and not r["correct"]


def test_forced_answer_without_exit_uses_the_last_probe_at_the_cap():
    run = seq([1, 2, 7, 3, 4])  # probe 3 (position 192) is right
    r = one(run, L=400, cap=200, rule=ExitRule(2), correct=False, semantics="forced-answer")
    assert not r["exited"] and r["correct"] and r["tokens"] == 200 + 15  # taken already
    # cap exactly at a probe's position: that probe was not taken, its answer is paid now
    r = one(run, L=400, cap=192, rule=ExitRule(2), semantics="forced-answer")
    assert r["correct"] and r["probes"] == 3 and r["tokens"] == 192 + 15
    # cap before the first probe: nothing to answer with
    r = one(run, L=400, cap=50, rule=ExitRule(2), correct=True, semantics="forced-answer")
    assert not r["correct"] and r["tokens"] == 50


def test_abandoned_runs_cost_nothing():
    r = one(seq([7, 7, 7]), L=300, cap=0, rule=ExitRule(1), correct=True)
    assert r["tokens"] == 0 and not r["exited"] and not r["correct"]


def test_many_runs_at_once_and_a_run_without_probes():
    runs = [seq([1, 1]), [], seq([2, 3, 3, 3], out=9)]
    pr = probes(runs)
    out = outcomes(pr, np.array([2, 1, 0]), np.array([500, 100, 500]),
                   np.array([True, True, False]), np.array([1000, 1000, 1000]), ExitRule(2))
    assert out.exited.tolist() == [True, False, True]
    assert out.exit_position.tolist() == [192, -1, 128]
    assert out.tokens.tolist() == [192 + 27, 100, 128 + 10]
    assert out.correct.tolist() == [False, True, False]


def _reference(run, L, cap, k, certain):
    """The rule step by step, one probe at a time, as a server would apply it."""
    agree = cert = 0
    prev = None
    paid = 0
    for pos, ans, c, ok, out in run:
        if pos >= min(L, cap):
            break
        paid += out
        agree = agree + 1 if ans >= 0 and ans == prev else (1 if ans >= 0 else 0)
        cert = cert + 1 if c else 0
        prev = ans
        if agree >= k or (certain and cert >= k):
            return True, pos, pos + paid, ok
    return False, -1, min(L, cap) + paid, None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(-1, 2), st.booleans(), st.integers(1, 32)),
                         max_size=12), min_size=1, max_size=6),
       st.integers(1, 4), st.booleans(), st.integers(0, 900), st.data())
def test_vectorised_equals_step_by_step(raw, k, certain, cap, data):
    runs = [[((j + 1) * 64, a, c, a == 1, o) for j, (a, c, o) in enumerate(r)] for r in raw]
    L = np.array([data.draw(st.integers(1, 64 * len(r) + 64)) for r in runs])
    out = outcomes(probes(runs), np.arange(len(runs)), L, np.ones(len(runs), bool),
                   np.full(len(runs), cap), ExitRule(k, certain))
    for i, r in enumerate(runs):
        exited, pos, tokens, ok = _reference(r, L[i], cap, k, certain)
        assert out.exited[i] == exited and out.exit_position[i] == pos
        assert out.tokens[i] == (tokens if cap > 0 else 0)
        if exited:
            assert out.correct[i] == ok


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-1, 2), min_size=2, max_size=15), st.integers(1, 3), st.data())
def test_causal_later_probes_never_change_the_decision(answers, k, data):
    """Rewrite every probe after the exit point (or after the cap without an exit): the exit
    decision, position, cost and answer stay the same."""
    run = seq(answers, correct_answer=1)
    cap = 64 * len(answers) + 1
    r = one(run, L=10_000, cap=cap, rule=ExitRule(k))
    cut = int(r["probes"]) if r["exited"] else len(run)
    tail = data.draw(st.lists(st.tuples(st.integers(-1, 2), st.integers(1, 32)),
                              min_size=len(run) - cut, max_size=len(run) - cut))
    changed = run[:cut] + [(p, a, True, a == 1, o) for (p, *_), (a, o) in zip(run[cut:], tail)]
    assert one(changed, L=10_000, cap=cap, rule=ExitRule(k)) == r


@pytest.mark.parametrize("k", [1, 2, 5])
def test_k_one_exits_at_first_answer(k):
    run = seq([4] * 6)
    r = one(run, L=10_000, cap=10_000, rule=ExitRule(k))
    assert r["exit_position"] == 64 * k


def test_no_rule_is_the_semantics_alone():
    run = seq([7, 7, 7, 3, 3, 3])
    r = one(run, L=400, cap=300, rule=None, correct=True)
    assert not r["exited"] and r["tokens"] == 300 and r["probes"] == 0 and not r["correct"]
    r = one(run, L=400, cap=300, rule=None, semantics="forced-answer")
    # forced to answer at 300: the last probe at <= 300 is at 256 (answer 3, wrong), paid now
    assert r["tokens"] == 305 and r["probes"] == 1 and not r["correct"]
    r = one(run, L=400, cap=150, rule=None, semantics="forced-answer")
    assert r["tokens"] == 155 and r["correct"]
    r = one(run, L=400, cap=500, rule=None, correct=True, semantics="forced-answer")
    assert r["tokens"] == 400 and r["correct"]  # finished within its cap: its own answer
