"""CLEAR's batch allocation: Lambert-W closed form, rational abandonment, exact market clearing.

Notation of ``docs/clear-method.md`` (the paper, reconstructed).  With price lambda and
``w = W0(e * lambda / alpha)`` every funded query gets the same slack ``x* = (1 - w) / beta``
above its predicted threshold, and a query is funded iff ``tau < (1 - w)**2 / (beta * w)``.
Everything depends on the price only through ``w`` (``lambda / alpha = w * exp(w - 1)``, a
monotone map), so the market is cleared by bisection on ``w`` in (0, 1]: no Lambert W per query
or per iteration.

Why it is fast: for a given ``w`` the funded queries are a contiguous range of the *sorted*
thresholds, so total demand is a prefix sum looked up with ``searchsorted``: O(log N) per price,
O(N log N) for the sort, O(N) for the final allocation.

The cap ``b_max``: a query whose ideal budget ``tau + x*`` exceeds ``b_max`` gets ``b_max`` if
its surplus there is still positive, i.e. ``alpha * x e^{-beta x} > lambda * b_max`` with
``x = b_max - tau``; that solves in closed form with the other branch point of the same
equation (``x_min = -W0(-beta c) / beta``), again a threshold on tau.

Tokens left over by the last abandonment jump (the clearing price is where demand first drops
to the budget, usually by abandoning one more query, so up to one query's demand stays unspent)
are handled by ``leftover``: ``next-in-line`` hands them to the cheapest abandoned query when
they cover at least its predicted threshold (it gets ``min(leftover, tau + x*, b_max)``);
``spread`` (the default) does that, then raises every funded cap by the same whole number of
tokens (up to ``b_max``) until fewer tokens than funded queries remain; ``none`` leaves them
unspent.  ``spread`` matters when the budget is ample: at price 0 every solvable query sits at
its utility peak ``tau + 1/beta`` and the rest of the budget would go unused, although a larger
cap never lowers real accuracy (it only truncates less).  Budgets are whole tokens (floored), and the price is the smallest
whose *whole-token* demand fits (:meth:`ClearMarket.clearing_w_whole`), so the sum never exceeds
the budget and flooring does not leave tokens unspent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import lambertw


@dataclass(frozen=True)
class ClearResult:
    budgets: np.ndarray  # int64 per query, 0 = abandoned
    w: float  # W0(e * lambda / alpha), in [0, 1]
    price: float  # lambda / alpha = w * exp(w - 1)
    slack: float  # x* = (1 - w) / beta
    cutoff: float  # funded iff tau < cutoff (before the cap)
    leftover: int  # budget tokens not allocated


class ClearMarket:
    """The sorted thresholds of one batch, ready to be priced many times."""

    def __init__(self, tau: np.ndarray, beta: float, b_max: float):
        if beta <= 0 or b_max <= 0:
            raise ValueError("beta and b_max must be > 0")
        self.tau = np.asarray(tau, dtype=float)
        self.beta = float(beta)
        self.b_max = float(b_max)
        eligible = np.isfinite(self.tau) & (self.tau < self.b_max)
        self.sorted = np.sort(self.tau[eligible])
        self.prefix = np.concatenate([[0.0], np.cumsum(self.sorted)])

    def _bounds(self, w: float) -> tuple[float, float, float, float]:
        """(x*, cutoff, upper tau of the uncapped range, upper tau of the capped range)."""
        beta, b_max = self.beta, self.b_max
        xs = (1.0 - w) / beta
        cut = funding_cut(w, beta)
        c = w * math.exp(w - 1.0) * b_max  # capped funded iff x e^{-beta x} > c, x = b_max - tau
        if beta * c * math.e >= 1.0:
            cap_hi = -math.inf
        elif c <= 0:
            cap_hi = b_max
        else:
            x_min = -lambertw(-beta * c, 0).real / beta
            cap_hi = b_max - x_min
        return xs, cut, b_max - xs, cap_hi

    def _counts(self, w: float) -> tuple[int, int, int, float]:
        beta, s = self.beta, self.sorted
        xs = (1.0 - w) / beta
        cut = funding_cut(w, beta)
        n_unc_max = int(np.searchsorted(s, self.b_max - xs, side="right"))
        n1 = min(int(np.searchsorted(s, cut, side="left")), n_unc_max)
        n2 = 0
        if n_unc_max < len(s):  # the capped limit (a Lambert W) matters only then
            cap_hi = self._bounds(w)[3]
            n2 = max(int(np.searchsorted(s, cap_hi, side="left")) - n_unc_max, 0)
        return n1, n_unc_max, n2, xs

    def demand(self, w: float) -> float:
        """Total tokens demanded at price w (before flooring to whole tokens)."""
        n1, _, n2, xs = self._counts(w)
        return float(self.prefix[n1] + n1 * xs + n2 * self.b_max)

    def clearing_w(self, budget: float) -> float:
        """Smallest w in [0, 1] whose demand fits the budget (bisection to float resolution)."""
        if self.demand(0.0) <= budget:
            return 0.0
        lo, hi = 0.0, 1.0  # demand(lo) > budget >= demand(hi) = 0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if self.demand(mid) <= budget:
                hi = mid
            else:
                lo = mid
        return hi

    def whole_demand(self, w: float) -> int:
        """Total whole-token demand at price w: sum of floor(tau + x*) plus capped b_max's.
        O(funded queries) (a floor per funded query), so it is only used near the price."""
        n1, _, n2, xs = self._counts(w)
        return int(np.floor(self.sorted[:n1] + xs).sum()) + n2 * int(math.floor(self.b_max))

    def clearing_w_whole(self, budget: float) -> float:
        """Smallest w whose *whole-token* demand fits the budget.

        Flooring loses up to one token per funded query, so clearing the real-valued demand
        leaves up to that many tokens unspent (0.1% of a 10^6-query budget).  The whole-token
        demand is monotone in w too and lies between D(w) - N and D(w) (N = queries that can
        be funded), so the answer lies between the real clearing prices for budget + N and
        for budget: bisection there, with the exact floored sum over the funded prefix."""
        hi = self.clearing_w(budget)
        if hi <= 0.0:
            return hi
        lo = self.clearing_w(budget + len(self.sorted))
        if self.whole_demand(lo) <= budget:
            return lo  # below lo even the real demand minus N exceeds the budget
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if self.whole_demand(mid) <= budget:
                hi = mid
            else:
                lo = mid
        return hi

    def budgets_at(self, w: float) -> np.ndarray:
        """Whole-token budgets at price w: tau + x* (floored), b_max when capped, 0 abandoned."""
        xs, cut, unc_hi, cap_hi = self._bounds(w)
        tau = self.tau
        with np.errstate(invalid="ignore"):
            unc = (tau < cut) & (tau <= unc_hi)
            capped = (tau > unc_hi) & (tau < cap_hi) & (tau < self.b_max)
        b = np.zeros(len(tau), dtype=np.int64)
        b[unc] = np.floor(tau[unc] + xs).astype(np.int64)
        b[capped] = int(self.b_max)
        return b

    def allocate(self, budget: float, leftover: str = "spread") -> ClearResult:
        """Clear the market for ``budget`` tokens and hand out the leftover (module doc)."""
        w = self.clearing_w_whole(budget)
        xs, cut, _, _ = self._bounds(w)
        tau = self.tau
        b = self.budgets_at(w)
        spare = int(math.floor(budget)) - int(b.sum())
        if leftover in ("next-in-line", "spread") and spare > 0:
            cand = np.flatnonzero((b == 0) & np.isfinite(tau) & (tau < self.b_max))
            if len(cand):
                j = cand[np.argmin(tau[cand])]
                if spare >= math.ceil(tau[j]):
                    give = min(spare, math.floor(tau[j] + xs), int(self.b_max))
                    b[j] = give
                    spare -= give
        if leftover == "spread" and spare > 0:
            spare = spread_evenly(b, spare, int(self.b_max))
        return ClearResult(
            budgets=b, w=w, price=w * math.exp(w - 1.0), slack=xs, cutoff=cut, leftover=spare
        )


def funding_cut(w: float, beta: float) -> float:
    """The funding cut-off at level ``w``: a query is funded iff ``tau < (1 - w)**2 / (beta w)``;
    infinite at w = 0 and wherever ``beta * w`` underflows to 0 (a subnormal w, reached by a
    zero budget or a search probing a tiny price)."""
    bw = beta * w
    return math.inf if bw <= 0 else (1.0 - w) ** 2 / bw


def spread_level(heads: np.ndarray, spare: int, weights: np.ndarray | None = None,
                 presorted: bool = False) -> int:
    """The water-filling level: the largest whole L in [0, max(heads)] with
    ``sum(weights * min(heads, L)) <= spare`` (weights 1 by default), in closed form over the
    sorted heads: the cost at level ``heads[k]``, ``c[k-1] + heads[k] * (weights of k..)``,
    rises with k, so the first rank where it exceeds ``spare`` is found by bisection on exact
    integers and L divides what is left among the caps from that rank on.  ``presorted``:
    ``heads`` (and ``weights`` with them) are already in ascending order."""
    h = np.asarray(heads, dtype=np.int64)
    w = None if weights is None else np.asarray(weights, dtype=np.int64)
    if not presorted:
        order = np.argsort(h, kind="stable")
        h = h[order]
        w = None if w is None else w[order]
    m = len(h)
    if w is None and presorted and m:
        level = even_share(spare, m, h.item(0))
        if level is not None:
            return level
    c = (h if w is None else w * h).cumsum()  # c[k - 1]: cost of filling ranks 0..k-1
    if int(c[-1]) <= spare:
        return int(h[-1])
    if w is None:
        def above(k: int) -> int:  # weight of ranks k..m-1
            return m - k
    else:
        t = w[::-1].cumsum()[::-1]

        def above(k: int) -> int:
            return t.item(k)
    lo, hi = 0, m - 1  # the first rank whose level costs more than spare
    while lo < hi:
        mid = (lo + hi) // 2
        if (c.item(mid - 1) if mid else 0) + h.item(mid) * above(mid) > spare:
            hi = mid
        else:
            lo = mid + 1
    return int((spare - (c.item(lo - 1) if lo else 0)) // above(lo))


def even_share(spare: int, m: int, least: int) -> int | None:
    """:func:`spread_level` of ``m`` unweighted heads whose smallest is ``least``, when every
    cap takes the same share: ``spare // m`` if that is below ``least`` (then level L costs
    ``m * L``, which fits for ``spare // m`` and not one more), else None (the level needs the
    heads themselves)."""
    share = spare // m
    return share if share < least else None


def spread_evenly(b: np.ndarray, spare: int, b_max: int, open_: np.ndarray | None = None,
                  weight: np.ndarray | None = None) -> int:
    """Raise the funded caps (b > 0) in place by equal whole-token amounts, none above b_max
    (water-filling); return the tokens still spare (fewer than the queries below the cap).

    Every funded cap below b_max gains ``min(headroom, L)`` for the largest whole ``L`` whose
    total cost fits ``spare`` (:func:`spread_level`, O(N log N) however many distinct
    headrooms there are).  ``open_`` (a mask) picks other caps to raise than the funded ones;
    ``weight`` says how many queries each cap stands for (``binned``'s per-bin levels), so
    raising cap i by x costs ``weight[i] * x``.
    """
    mask = (b > 0) if open_ is None else open_
    open_ = np.flatnonzero(mask & (b < b_max))
    if spare <= 0 or len(open_) == 0:
        return spare
    head = b_max - b[open_]
    w = None if weight is None else np.asarray(weight)[open_]
    level = spread_level(head, spare, w)
    raise_by = np.minimum(head, level)
    b[open_] += raise_by
    return spare - int(raise_by.sum() if w is None else (w * raise_by).sum())


def w_of_price(price_over_alpha: float) -> float:
    """w = W0(e * lambda / alpha): the closed form's only dependence on the price."""
    return float(lambertw(math.e * price_over_alpha, 0).real)


def clear_allocate(
    tau: np.ndarray, budget: float, beta: float, b_max: float = 4096, leftover: str = "spread"
) -> ClearResult:
    """Allocate ``budget`` tokens over queries with predicted thresholds ``tau`` (CLEAR)."""
    return ClearMarket(tau, beta, b_max).allocate(budget, leftover)


def utility(b: np.ndarray, tau: np.ndarray, beta: float, alpha: float = 1.0) -> np.ndarray:
    """The shifted-surge utility phi_i(b) = alpha (b - tau) exp(-beta (b - tau)) for b >= tau."""
    x = np.asarray(b, dtype=float) - np.asarray(tau, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        u = alpha * x * np.exp(-beta * x)
    return np.where(x >= 0, u, 0.0)
