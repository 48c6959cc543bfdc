"""Early exit inside the simulated run: where each request stops, what it answers, what it costs.

A policy with an exit rule (:class:`ExitRule`, declared by the ``early-exit`` family in
:mod:`policies.early_exit`) never sees a probe.  The *server* applies the rule while the request
decodes, as Dynasor does: every recorded probe position (every 64 tokens of reasoning in the
governor recordings) it asks the model for its answer now, and it stops the request after ``k``
consecutive probes that gave the same answer (answer class ``>= 0``, math-equivalent by the
import's grader), or, with ``certain``, after ``k`` consecutive probes flagged certain.  This
module replays that rule on the recorded probes of each request's hidden sample.

Rules, per run with ``L`` recorded tokens and cap ``b`` (``docs/reasoning.md``):

* only probes at positions ``p < min(L, b)`` are taken (the run has not finished or hit its cap
  there); the decision at a probe depends only on that probe and the ones before it, so
  changing later probes never changes it (causal by construction: run lengths are prefix sums);
* **exit** at the first probe completing a run of ``k``: the request's decode length is
  ``p`` plus the answer tokens (``probe_out_tokens``) of every probe taken so far, that one
  included (each forced answer is decoded by the same request); its verdict is that probe's
  grade (``probe_correct``).  The engine learns that length as the request's length, so the
  slot and KV are freed exactly when the exit happens;
* **no exit**: the run ends as it would without the rule (``L <= b``: its own final verdict;
  ``L > b``: wrong under ``hard-cap``, under ``forced-answer`` the grade of the last probe at
  a position ``<= b``, whose answer tokens are paid if that probe was not already taken), and it
  still pays the answer tokens of every probe it took.

Everything is vectorised over the flat probe arrays of :class:`traces.schema.TraceSet`
(CSR: ``probe_offsets`` per flat sample), so a decision group of any size costs a few numpy
passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import ExitRule  # noqa: F401  (declared with the policy interface)
from sim.foundation.errors import UserError

SEMANTICS = ("hard-cap", "forced-answer")


@dataclass(frozen=True)
class Probes:
    """The probe arrays of a trace set (see ``traces.schema.TraceSet``), CSR over samples."""

    offsets: np.ndarray  # int64, n_samples + 1
    position: np.ndarray  # int32, ordered within each sample
    answer: np.ndarray  # int32 answer class within the query, -1 = none
    certain: np.ndarray  # bool
    correct: np.ndarray  # bool
    out_tokens: np.ndarray  # int32

    @classmethod
    def of(cls, ts, where: str | None = None, field: str | None = None) -> "Probes":
        """The probes of ``ts``; a clear error when the set has none."""
        if not getattr(ts, "has_probes", False):
            raise UserError(f"trace set '{ts.name}' has no forced-answer probes; early exit "
                            "needs sets imported with probes (the reasoning sets, see "
                            "'clearsim traces list')", where=where, field=field)
        return cls(np.asarray(ts.probe_offsets, dtype=np.int64), np.asarray(ts.probe_position),
                   np.asarray(ts.probe_answer), np.asarray(ts.probe_certain, dtype=bool),
                   np.asarray(ts.probe_correct, dtype=bool), np.asarray(ts.probe_out_tokens))


@dataclass(frozen=True)
class Outcome:
    """Per run: whether and where it exited, its decode length and verdict."""

    exited: np.ndarray  # bool
    exit_position: np.ndarray  # int64, tokens of reasoning at the exit; -1 = no exit
    tokens: np.ndarray  # int64 decode length: reasoning + every forced answer's tokens
    probe_tokens: np.ndarray  # int64, the forced answers' share of ``tokens``
    probes: np.ndarray  # int64, probes taken
    correct: np.ndarray  # bool


def _runs(ok: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Length of the streak ending at each element: ``ok`` elements, continued from the
    previous element where ``cont`` (0 where not ``ok``)."""
    i = np.arange(len(ok))
    start = np.maximum.accumulate(np.where(cont, 0, i))
    return np.where(ok, i - start + 1, 0)


def outcomes(pr: Probes, samples: np.ndarray, sample_tokens: np.ndarray,
             sample_correct: np.ndarray, caps: np.ndarray, rule: ExitRule | None,
             semantics: str = "hard-cap") -> Outcome:
    """Replay ``rule`` on runs ``samples`` (flat sample indices) with caps ``caps``.

    ``sample_tokens`` / ``sample_correct`` are those runs' recorded lengths and final verdicts.
    A cap of 0 (abandoned) gives no tokens and a wrong verdict.  ``rule=None`` replays a run
    without early exit (no probe taken), which under ``forced-answer`` still pays and scores
    the forced answer at the cap: the semantics alone, for policies without a rule.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}")
    samples = np.asarray(samples, dtype=np.int64)
    L = np.asarray(sample_tokens, dtype=np.int64)
    caps = np.asarray(caps, dtype=np.int64)
    m = len(samples)
    limit = np.minimum(L, caps)
    starts = pr.offsets[samples]
    counts = pr.offsets[samples + 1] - starts
    base = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(counts, out=base[1:])
    total = int(base[-1])
    seg = np.repeat(np.arange(m), counts)
    idx = np.repeat(starts - base[:-1], counts) + np.arange(total)
    pos = pr.position[idx].astype(np.int64)
    ans = pr.answer[idx]
    cert = pr.certain[idx]
    tok = pr.out_tokens[idx].astype(np.int64)
    first = np.zeros(total, dtype=bool)
    first[base[:-1][counts > 0]] = True
    prev = lambda a: np.concatenate([a[:1], a[:-1]])  # noqa: E731  (masked by ``first``)
    agree = _runs(ans >= 0, ~first & (prev(ans) >= 0) & (ans == prev(ans)))
    taken = pos < limit[seg]
    if rule is None:
        taken[:] = False
        hit = taken
    else:
        hit = agree >= rule.k
        if rule.certain:
            hit |= _runs(cert, ~first & prev(cert)) >= rule.k
        hit &= taken

    big = np.iinfo(np.int64).max
    exit_at = np.full(m, big, dtype=np.int64)
    ne = counts > 0
    if total:
        exit_at[ne] = np.minimum.reduceat(np.where(hit, np.arange(total), big), base[:-1][ne])
    exited = exit_at < big
    cum = np.concatenate([[0], np.cumsum(tok)])  # cum[j + 1] - cum[base]: tokens of probes base..j

    n_taken = np.bincount(seg, weights=taken, minlength=m).astype(np.int64)
    paid = np.bincount(seg, weights=np.where(taken, tok, 0), minlength=m).astype(np.int64)
    correct = (L <= caps) & np.asarray(sample_correct, dtype=bool) & (caps > 0)
    if semantics == "forced-answer":
        n_le = np.bincount(seg, weights=pos <= caps[seg], minlength=m).astype(np.int64)
        forced = (L > caps) & (n_le > 0) & (caps > 0)
        j = base[:-1] + n_le - 1  # last probe at a position <= cap
        jf = j[forced]
        correct[forced] = pr.correct[idx[jf]]
        extra = forced & (n_le > n_taken)  # that probe was not taken yet (position == cap)
        paid[extra] += tok[j[extra]]
        n_taken[extra] += 1
    tokens = limit + paid
    probes = n_taken
    exit_position = np.full(m, -1, dtype=np.int64)
    if exited.any():
        e = exit_at[exited]
        exit_position[exited] = pos[e]
        paid[exited] = cum[e + 1] - cum[base[:-1][exited]]
        probes[exited] = e - base[:-1][exited] + 1
        tokens[exited] = pos[e] + paid[exited]
        correct[exited] = pr.correct[idx[e]]
    return Outcome(exited, exit_position, np.where(caps > 0, tokens, 0), paid, probes, correct)


def expected_accuracy(pr: Probes, ts, query: np.ndarray, caps: np.ndarray, rule: ExitRule | None,
                      semantics: str = "hard-cap") -> np.ndarray:
    """Each query's accuracy at its cap under the rule, averaged over all its recorded runs
    (the early-exit counterpart of ``traces.curves.accuracy_at``; same mean as scoring the
    drawn run, lower variance)."""
    query = np.asarray(query, dtype=np.int64)
    counts = ts.samples_per_query[query]
    base = np.zeros(len(query) + 1, dtype=np.int64)
    np.cumsum(counts, out=base[1:])
    flat = np.repeat(ts.offsets[query] - base[:-1], counts) + np.arange(base[-1])
    out = outcomes(pr, flat, ts.sample_tokens[flat], ts.sample_correct[flat],
                   np.repeat(caps, counts), rule, semantics)
    hits = np.bincount(np.repeat(np.arange(len(query)), counts), weights=out.correct,
                       minlength=len(query))
    return hits / counts


class ExitLog:
    """What the run records of one early-exit policy's requests (queries.parquet columns).

    :meth:`lengths` is called by the allocation process for every funded group: it replays the
    rule on the group's hidden runs and returns their decode lengths for the engine.
    """

    def __init__(self, wl, rule: ExitRule, semantics: str = "hard-cap",
                 where: str | None = None):
        if getattr(wl, "curves", None) is not None:
            raise UserError("early exit replays recorded probes, so it needs recorded outcomes; "
                            "set traces.outcomes: empirical", where=where, field="traces.outcomes")
        self.wl, self.rule, self.semantics = wl, rule, semantics
        self.probes = Probes.of(wl.traces, where, "traces.sets")
        n = wl.n
        self.exited = np.zeros(n, dtype=bool)
        self.exit_position = np.full(n, -1, dtype=np.int64)
        self.probe_tokens = np.zeros(n, dtype=np.int64)
        self.correct = np.zeros(n, dtype=bool)

    def lengths(self, idx: np.ndarray, caps: np.ndarray) -> np.ndarray:
        """Decode lengths of arrivals ``idx`` funded with ``caps`` (> 0), recording the rest."""
        s = self.wl.sample[idx]
        out = outcomes(self.probes, s, self.wl.traces.sample_tokens[s],
                       self.wl.traces.sample_correct[s], caps, self.rule, self.semantics)
        self.exited[idx] = out.exited
        self.exit_position[idx] = out.exit_position
        self.probe_tokens[idx] = out.probe_tokens
        self.correct[idx] = out.correct
        return np.maximum(out.tokens, 1)

    def expected_accuracy(self, caps: np.ndarray) -> np.ndarray:
        return expected_accuracy(self.probes, self.wl.traces, self.wl.query, caps, self.rule,
                                 self.semantics)


def record_exits(rows, log: ExitLog | None, budget: np.ndarray) -> None:
    """Add the early-exit columns to one policy's rows of queries.parquet (in place):
    ``exited``, ``exit_position`` (tokens of reasoning at the exit, -1 = none) and
    ``probe_tokens`` (forced answers' tokens, part of ``tokens_generated``); for a policy with
    a rule, ``correct`` and ``expected_accuracy`` are scored under it."""
    n = len(rows)
    if log is None:
        rows["exited"] = np.zeros(n, dtype=bool)
        rows["exit_position"] = np.full(n, -1, dtype=np.int64)
        rows["probe_tokens"] = np.zeros(n, dtype=np.int64)
        return
    funded = budget > 0
    rows["correct"] = log.correct & funded
    rows["expected_accuracy"] = np.where(funded, log.expected_accuracy(budget), 0.0)
    rows["exited"] = log.exited & funded
    rows["exit_position"] = np.where(funded, log.exit_position, -1)
    rows["probe_tokens"] = np.where(funded, log.probe_tokens, 0)
