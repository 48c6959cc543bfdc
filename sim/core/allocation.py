"""Allocation timing: when each arrival gets its budget, and the SimPy process that does it.

The policy's :class:`~policies.base.Timing` splits the arrival stream into decision groups:

* ``immediate``: each query alone, at its arrival.
* ``window``: queries arriving in ``[k W, (k+1) W)`` are decided together at ``(k+1) W``;
  with ``every_k`` a window also closes at its k-th arrival (decided then), and with
  ``window_s`` None only every k arrivals close a group (the last, partial group at its last
  arrival).
* ``batch``: every ``batch_size`` consecutive arrivals (``None``: all of them) are decided at
  the arrival of the group's last query.

**The stream's end closes the open window.**  A window closes at its grid boundary, except
the last one: it closes at the run's last arrival.  A server does not know when a live stream
ends, but a finite run (a job of N queries, or a stream that is drained) does: once the last
query has arrived nothing can join the window, and waiting for the grid boundary would only add
latency (a 1,000 s window would otherwise hold a 12 s run for 1,000 s).  Every earlier window
ends before a later arrival, so only the last group's decision time changes.  With a token-rate
budget this also ends the run's allowance at the last arrival, as ``per_query_budget`` assumes.

At its decision time a group's budget is the target mean tokens per query times its size (or,
when the scenario gives the budget as a token rate, that rate times the time elapsed since the
previous decision, for window and batch timings: bursts then get fewer tokens per query); the
policy sees a :class:`~policies.base.QueryView` of the group and returns caps.  Queries with a
cap of 0 are abandoned there (no generation); the others are dispatched to the replicas.  The
time a query spends waiting for its decision is latency, like any queueing.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
import simpy

from policies.base import Policy, Timing
from sim.core.engine import Recorder
from sim.core.workload import Workload


def decision_groups(timing: Timing, arrival_s: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """(decision time, arrival indices) in time order."""
    n = len(arrival_s)
    if n == 0:
        return []
    if timing.kind == "immediate":
        return [(float(t), np.array([i])) for i, t in enumerate(arrival_s)]
    if timing.kind == "window" and timing.every_k is not None:
        return _window_or_k_groups(timing.window_s, timing.every_k, arrival_s)
    if timing.kind == "window":
        w = timing.window_s
        k = np.floor(arrival_s / w).astype(np.int64)
        cuts = np.flatnonzero(np.diff(k)) + 1
        end = float(arrival_s[-1])  # the stream's end closes the open window (module doc)
        return [(min(float((k[g[0]] + 1) * w), end), g) for g in np.split(np.arange(n), cuts)]
    if timing.kind == "batch":
        size = timing.batch_size or n
        groups = [np.arange(s, min(s + size, n)) for s in range(0, n, size)]
        return [(float(arrival_s[g[-1]]), g) for g in groups]
    raise ValueError(f"unknown timing {timing.kind!r}")


def _window_or_k_groups(w: float | None, k: int, arrival_s: np.ndarray):
    """Windows on the W grid, each also closed at its k-th arrival (W None: every k only)."""
    n = len(arrival_s)
    if w is None:
        groups = [np.arange(s, min(s + k, n)) for s in range(0, n, k)]
        return [(float(arrival_s[g[-1]]), g) for g in groups]
    out, start = [], 0
    while start < n:
        end_t = (np.floor(arrival_s[start] / w) + 1) * w  # the grid boundary of its window
        stop = min(int(np.searchsorted(arrival_s, end_t, side="left")), start + k)
        g = np.arange(start, stop)
        t = float(arrival_s[g[-1]]) if len(g) == k else min(float(end_t), float(arrival_s[-1]))
        out.append((t, g))
        start = stop
    return out


@dataclass
class Decisions:
    """What the allocator decided for each arrival."""

    budget: np.ndarray
    decision_s: np.ndarray
    shadow_price: np.ndarray  # NaN where the policy has no price

    @classmethod
    def empty(cls, n: int) -> "Decisions":
        return cls(np.zeros(n, dtype=np.int64), np.full(n, np.nan), np.full(n, np.nan))


class DecisionClock:
    """When the allocation process decides next (``inf`` once it is done): the only event
    outside the replicas that can hand them work, so each replica computes ahead up to it
    (:class:`sim.core.engine.Replica` ``external``) instead of scanning SimPy's event queue.

    With the decision schedule known (``times`` and group ``sizes``: they depend on the
    arrivals only) and round-robin routing over several replicas (``router``, ``replicas``), a
    replica need not stop at every decision, only at the first one that could reach it
    (:meth:`for_replica`): a replica ``d`` places behind the rotation's next one gets no request
    before the decisions from now on have had more than ``d`` queries to dispatch, whatever
    the policy funds.  So a decision wakes the replicas it may hand work to, not all of them
    (their completions reach feedback policies through :meth:`Recorder.flush
    <sim.core.engine.Recorder.flush>` at the decision's time).
    """

    def __init__(self, times=None, sizes=None, router=None, replicas: int = 1):
        self.next_s = 0.0
        self.index = 0  # the next decision not yet made
        self._router = router if times is not None and replicas > 1 else None
        self._replicas = replicas
        if self._router is not None:
            self._times = np.asarray(times, dtype=float).tolist() + [float("inf")]
            self._cum = np.concatenate(([0], np.cumsum(sizes))).tolist()

    def __call__(self) -> float:
        return self.next_s

    def for_replica(self, r: int):
        """The ``external`` horizon of replica ``r``: the next decision that could reach it
        (every decision when the clock has no schedule or no round-robin router)."""
        router = self._router
        if router is None:
            return self
        times, cum, n = self._times, self._cum, self._replicas

        def horizon() -> float:
            c = self.index
            # The first decision j >= c whose queries, with those of c..j-1, exceed d.
            j = bisect_right(cum, cum[c] + (r - router._next) % n) - 1
            return times[j]

        return horizon


def request_lengths(wl: Workload, exits=None):
    """How many tokens funded arrivals generate under their caps: min(cap, needed) plus a
    forced answer's tokens (:meth:`sim.core.workload.Workload.generated_tokens`), or, with
    ``exits`` (a :class:`sim.core.early_exit.ExitLog`, for policies with an exit rule), where each
    request stops, its forced answers' tokens included."""
    return wl.generated_tokens if exits is None else exits.lengths


def _decide(policy: Policy, wl: Workload, idx: np.ndarray, budget: float, now: float,
            out: Decisions, gen_tokens: np.ndarray, lengths) -> np.ndarray:
    """Ask the policy about one group, record its caps; return the funded indices."""
    alloc = policy.allocate(wl.view(idx), budget)
    caps = np.asarray(alloc.budgets, dtype=np.int64)
    if caps.shape != idx.shape or (caps < 0).any():
        raise RuntimeError(f"policy {policy.name} returned invalid budgets")
    out.budget[idx] = caps
    out.decision_s[idx] = now
    if alloc.shadow_price is not None:
        out.shadow_price[idx] = alloc.shadow_price
    funded = idx[caps > 0]
    if len(funded):
        gen_tokens[funded] = lengths(funded, caps[caps > 0])
    return funded


def decide_ahead(policy: Policy, wl: Workload, target: float, out: Decisions,
                 gen_tokens: np.ndarray, exits=None) -> tuple[np.ndarray, np.ndarray]:
    """Every decision of a policy that does not learn from completions, before the run: it
    depends only on the arrivals, so it is the same whenever it is computed.  Returns the
    funded queries in dispatch order and their decision times (what
    :func:`allocation_process` would dispatch, when).  Immediate policies that can decide
    many queries at once (:meth:`~policies.base.Policy.allocate_each`) are asked once."""
    if policy.wants_feedback:
        raise ValueError("decide_ahead is for policies without feedback")
    timing = policy.timing
    lengths = request_lengths(wl, exits)
    if timing.kind == "immediate" and wl.n:
        idx = np.arange(wl.n)
        caps = policy.allocate_each(wl.view(idx), float(target))
        if caps is not None:
            caps = np.asarray(caps, dtype=np.int64)
            if caps.shape != idx.shape or (caps < 0).any():
                raise RuntimeError(f"policy {policy.name} returned invalid budgets")
            out.budget[:] = caps
            out.decision_s[:] = wl.arrival_s
            ok = caps > 0
            funded = idx[ok]
            gen_tokens[funded] = lengths(funded, caps[ok])
            return funded, wl.arrival_s[funded].astype(float)
    rate = policy.ctx.token_rate if timing.kind != "immediate" else None
    last = now = 0.0
    parts, times = [], []
    for t, idx in decision_groups(timing, wl.arrival_s):
        now = max(now, t)
        budget = target * len(idx) if rate is None else rate * (now - last)
        last = now
        funded = _decide(policy, wl, idx, budget, now, out, gen_tokens, lengths)
        if len(funded):
            parts.append(funded)
            times.append(np.full(len(funded), now))
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(parts), np.concatenate(times)


def allocation_process(env: simpy.Environment, policy: Policy, wl: Workload, target: float,
                       dispatch, out: Decisions, gen_tokens: np.ndarray, rec: Recorder,
                       exits=None, clock: DecisionClock | None = None, groups=None):
    """SimPy process: decide each group at its time, record, dispatch the funded queries.

    ``gen_tokens`` is filled with min(cap, tokens needed) (plus a forced answer's tokens under
    ``traces.semantics: forced-answer``; at least 1 for a funded query) before
    dispatch, so the replicas know each request's length, as a real server learns it by
    generating.  Policies with ``wants_feedback`` hear of every completion through ``rec``.
    With ``exits`` (a :class:`sim.core.early_exit.ExitLog`, for policies with an exit rule) the
    length is where the request stops instead, its forced answers' tokens included
    (:func:`request_lengths`).  ``clock``, if given, is kept at the time (and index) of the
    next decision.  ``groups`` is :func:`decision_groups` of the policy's timing, when the
    caller computed it already (for the clock).
    """
    feedback = policy.wants_feedback
    if feedback:
        def tell(idx, now):  # one completion (the usual case) as a view, not a gather
            if len(idx) == 1:
                i = int(idx[0])
                policy.on_finished(out.budget[i:i + 1], gen_tokens[i:i + 1], now)
            else:
                policy.on_finished(out.budget[idx], gen_tokens[idx], now)

        rec.listeners.append(tell)
        rec.defer = True  # each decision hears of the completions before it (rec.flush)
    timing = policy.timing
    if timing.kind == "immediate" and policy.allocate_one is not None:
        yield from _each_arrival(env, policy, wl, target, dispatch, out, gen_tokens, rec, exits,
                                 clock)
        return
    rate = policy.ctx.token_rate if timing.kind != "immediate" else None
    lengths = request_lengths(wl, exits)
    last = 0.0
    k = -1
    for k, (t, idx) in enumerate(groups if groups is not None
                                 else decision_groups(timing, wl.arrival_s)):
        if clock is not None:
            clock.next_s = t
            clock.index = k
        if t > env.now:
            yield env.timeout(t - env.now)
        if feedback:
            rec.flush(env.now)
        budget = target * len(idx) if rate is None else rate * (env.now - last)
        last = env.now
        funded = _decide(policy, wl, idx, budget, env.now, out, gen_tokens, lengths)
        if len(funded):
            dispatch(funded)
    if clock is not None:
        clock.next_s = float("inf")
        clock.index = k + 1


def _each_arrival(env: simpy.Environment, policy: Policy, wl: Workload, target: float, dispatch,
                  out: Decisions, gen_tokens: np.ndarray, rec: Recorder, exits=None,
                  clock: DecisionClock | None = None):
    """:func:`allocation_process` for an immediate policy with ``allocate_one``: the same
    decisions at the same times, recorded and dispatched the same way, in scalars (no view,
    no arrays per arrival).  Under hard caps without an exit rule a funded query generates
    max(min(cap, needed), 1) tokens (:meth:`~sim.core.workload.Workload.generated_tokens`);
    otherwise its length comes from :func:`request_lengths`, as for a group."""
    one = policy.allocate_one
    budget = target * 1  # what a group of one gets (target x its size)
    needed = wl.tokens_needed.tolist() if exits is None and wl.semantics == "hard-cap" else None
    lengths = request_lengths(wl, exits)
    dec_budget, dec_s, dec_price = out.budget, out.decision_s, out.shadow_price
    tau_pred = np.asarray(wl.tau_pred, dtype=float).tolist()
    feedback = policy.wants_feedback
    i = -1
    for i, t in enumerate(np.asarray(wl.arrival_s, dtype=float).tolist()):
        if clock is not None:
            clock.next_s = t
            clock.index = i  # one decision per arrival, in arrival order
        if t > env.now:
            yield env.timeout(t - env.now)
        now = env.now
        if feedback:
            rec.flush(now)
        cap, price = one(tau_pred[i], t, budget)  # the policy sees the arrival time
        if not cap >= 0:
            raise RuntimeError(f"policy {policy.name} returned invalid budgets")
        dec_budget[i] = cap
        dec_s[i] = now
        if price is not None:
            dec_price[i] = price
        if cap > 0:
            idx = np.array([i])
            if needed is not None:
                gen_tokens[i] = max(min(cap, needed[i]), 1)
            else:
                gen_tokens[idx] = lengths(idx, np.array([cap], dtype=np.int64))
            dispatch(idx)
    if clock is not None:
        clock.next_s = float("inf")
        clock.index = i + 1
