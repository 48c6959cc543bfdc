"""The multiple-choice knapsack behind ``oracle`` and ``greedy-marginal``.

Each query i picks one option k (a cap ``costs[i, k]`` tokens with value ``values[i, k]``, the
query's accuracy at that cap); the sum of caps must fit the budget; maximise the total value.
Option 0 must be (0 tokens, value 0): abandoning.

**Lagrangian relaxation on upper concave hulls** (the scalable path).  At a price lambda each
query independently picks ``argmax_k values - lambda * costs``; only vertices of its upper
concave hull can win, and between two vertices the price at which it switches is the slope of
the hull segment.  Sorting every hull segment of every query by slope and taking them in that
order until the budget is spent therefore walks the whole dual curve: the prefix taken is the
Lagrangian allocation at the clearing price (every query's choice is a prefix of its own
segments because its slopes decrease), and adding the fraction of the first segment that does
not fit gives the LP relaxation's optimum, an upper bound on every allocation's value.  The
**duality gap** is that bound minus the value of the integer allocation returned; after the
break, a bounded fill pass spends what is left on the next affordable segments, in slope order.

**Exact dynamic programming** for small instances (``n * K * budget`` up to ``DP_LIMIT``
cells): the pseudo-polynomial recursion over whole-token capacities; the gap is then 0.  Tests
use it so that "the oracle is at least as good as any policy" is exact, not up to the gap.

Costs: O(n K) per hull pass (a few passes), one sort of at most n (K - 1) slopes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DP_LIMIT = 20_000_000
FILL_ROUNDS = 64


@dataclass(frozen=True)
class MckpResult:
    budgets: np.ndarray  # int64 cost of the chosen option per query
    value: float  # total value of the chosen options
    bound: float  # LP-relaxation (Lagrangian dual) upper bound on any allocation's value
    price: float  # value per token of the marginal hull segment (the multiplier)
    exact: bool  # solved by dynamic programming (bound == value)

    @property
    def gap(self) -> float:
        return max(self.bound - self.value, 0.0)


def _clean(costs: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort options by cost (if needed) and replace values by the best value at no more
    tokens (a running max: an option worth less than a cheaper one is never chosen)."""
    c, v = costs.astype(float), values.astype(float)
    if (np.diff(c, axis=1) < 0).any():
        order = np.argsort(c, axis=1, kind="stable")
        c = np.take_along_axis(c, order, axis=1)
        v = np.take_along_axis(v, order, axis=1)
    np.maximum.accumulate(v, axis=1, out=v)
    return c, v


def upper_hulls(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's upper concave hull, for rows sorted by cost with non-decreasing values.

    Andrew's monotone chain run on all rows at once: columns are visited left to right and
    each row keeps a stack of hull vertices (column indices); a new point with a gain over the
    stack's top pops the vertices on or below the chord to it (and a top of equal cost), then
    is pushed.  Returns (stack, top): row i's vertices are ``stack[i, :top[i] + 1]``.  O(n K)
    vectorised work (each vertex is pushed and popped at most once per row)."""
    n, k = c.shape
    rows_all = np.arange(n)
    stack = np.zeros((n, k), dtype=np.int64)
    top = np.zeros(n, dtype=np.int64)
    for j in range(1, k):
        t = stack[rows_all, top]
        act = np.flatnonzero(v[:, j] > v[rows_all, t])
        cj, vj = c[act, j], v[act, j]
        r = act
        while len(r):
            tb = top[r]
            b = stack[r, tb]
            cb, vb = c[r, b], v[r, b]
            a = stack[r, np.maximum(tb - 1, 0)]
            ca, va = c[r, a], v[r, a]
            # pop b if it is on/below the chord a -> j, or has the same cost as j
            pop = ((vb - va) * (cj - cb) <= (vj - vb) * (cb - ca)) & (tb >= 1)
            pop |= cb == cj
            if not pop.any():
                break
            base = pop & (tb == 0)  # the base point itself is replaced (equal cost, more value)
            stack[r[base], 0] = j
            top[r[pop & ~base]] -= 1
            keep = pop & ~base
            r, cj, vj = r[keep], cj[keep], vj[keep]
        pushed = act[stack[act, top[act]] != j]
        top[pushed] += 1
        stack[pushed, top[pushed]] = j
    return stack, top


def _dp(c: np.ndarray, v: np.ndarray, budget: int) -> tuple[np.ndarray, float]:
    """Exact MCKP by dynamic programming over whole-token capacities 0..budget."""
    n, k = c.shape
    ci = c.astype(np.int64)
    f = np.zeros(budget + 1)
    choice = np.zeros((n, budget + 1), dtype=np.int16)
    for i in range(n):
        best = f.copy()  # option 0 (cost 0, value 0)
        arg = np.zeros(budget + 1, dtype=np.int16)
        for o in range(1, k):
            cost = ci[i, o]
            if cost > budget:
                break
            cand = np.full(budget + 1, -np.inf)
            cand[cost:] = f[: budget + 1 - cost] + v[i, o]
            better = cand > best
            best[better] = cand[better]
            arg[better] = o
        f = best
        choice[i] = arg
    cap = int(np.argmax(f))
    picks = np.zeros(n, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        o = int(choice[i, cap])
        picks[i] = ci[i, o]
        cap -= ci[i, o]
    return picks, float(f.max())


def solve_mckp(costs: np.ndarray, values: np.ndarray, budget: float,
               exact_limit: int = DP_LIMIT) -> MckpResult:
    """Best choice of one option per row with total cost <= budget (module doc)."""
    costs = np.atleast_2d(np.asarray(costs, dtype=float))
    values = np.atleast_2d(np.asarray(values, dtype=float))
    n, k = costs.shape
    budget = max(float(budget), 0.0)
    if n == 0:
        return MckpResult(np.zeros(0, dtype=np.int64), 0.0, 0.0, 0.0, True)
    if (costs[:, 0] != 0).any() or (values[:, 0] != 0).any():
        raise ValueError("option 0 of every row must be (0 tokens, value 0)")
    if not np.isfinite(costs).all() or (costs < 0).any() or not np.isfinite(values).all():
        raise ValueError("costs must be finite and >= 0, values finite")
    c, v = _clean(costs, values)
    b_int = int(math.floor(budget))
    if n * k * (b_int + 1) <= exact_limit and np.array_equal(c, np.floor(c)):
        picks, val = _dp(c, v, b_int)
        return MckpResult(picks, val, val, math.nan, True)

    stack, top = upper_hulls(c, v)
    # hull segments: from each vertex to the next of the same row
    seg_row, seg = np.nonzero(np.arange(k - 1)[None, :] < top[:, None])
    frm, to = stack[seg_row, seg], stack[seg_row, seg + 1]
    flat_c, flat_v = c.ravel(), v.ravel()
    dc = flat_c[seg_row * k + to] - flat_c[seg_row * k + frm]
    dv = flat_v[seg_row * k + to] - flat_v[seg_row * k + frm]
    slope = dv / dc
    order = np.argsort(-slope, kind="stable")
    cum = np.cumsum(dc[order])
    n_take = int(np.searchsorted(cum, budget, side="right"))
    taken = order[:n_take]
    # within a row slopes strictly decrease, so the taken segments of a row are a prefix of
    # its segments: the row's choice is its vertex number (segments taken)
    m = np.bincount(seg_row[taken], minlength=n)
    level = stack[np.arange(n), m]  # column of each row's chosen vertex
    spent = float(cum[n_take - 1]) if n_take else 0.0
    value = float(v[:, 0].sum() + dv[taken].sum())
    if n_take < len(order):
        brk = order[n_take]
        bound = value + (budget - spent) * slope[brk]
        price = float(slope[brk])
        # fill: later segments that start at their row's current choice and still fit, in
        # slope order.  Only each row's next segment can be taken, so the candidates are at
        # most one per row; taking one makes that row's following segment a candidate.
        first = np.zeros(n, dtype=np.int64)  # position of each row's first segment
        np.cumsum(top[:-1], out=first[1:])
        nxt = first + m  # each row's next segment (if it has one)
        has = m < top
        pos = np.empty(len(order), dtype=np.int64)
        pos[order] = np.arange(len(order))
        cand = nxt[has]
        cand = np.sort(pos[cand[pos[cand] > n_take]])  # positions in slope order
        for _ in range(FILL_ROUNDS):
            fits = np.flatnonzero(dc[order[cand]] <= budget - spent)
            if len(fits) == 0:
                break
            at = cand[fits[0]]
            sg = order[at]
            row = seg_row[sg]
            level[row] = to[sg]
            spent += dc[sg]
            value += dv[sg]
            cand = cand[fits[0] + 1:]
            if seg[sg] + 1 < top[row]:  # the row's following segment joins the candidates
                p2 = pos[sg + 1]
                cand = np.insert(cand, np.searchsorted(cand, p2), p2)
    else:
        bound, price = value, 0.0
    picks = c[np.arange(n), level].astype(np.int64)
    return MckpResult(picks, value, float(bound), price, False)
