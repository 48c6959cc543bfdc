"""``clear-posted``'s market, kept from arrival to arrival: the same caps and prices as
:class:`~policies.clear_market.ClearMarket`, at a small fraction of the cost.

``clear-posted`` clears a market over the predicted thresholds of the last ``history`` arrivals
at every arrival and keeps the newest query's cap.  :class:`ClearMarket` does that from scratch:
a sort, then three bisections over ``w`` to floating-point resolution (two on the real-valued
demand, one on the whole-token demand, ~170 demand evaluations, the last ones O(funded) each),
then the allocation of every query: ~2 ms per arrival.  :class:`SlidingMarket` gives the same
two numbers (the new query's cap and the price) another way:

* **The window is kept sorted** (one ``bisect`` insertion and removal per arrival), so nothing
  is sorted again; the prefix sums are one ``cumsum`` of the sorted window (the same values in
  the same order as :class:`ClearMarket`'s, so the same sums to the last bit).
* **The price is found, not bisected.**  Each bisection returns the smallest float ``w`` whose
  (real or whole-token) demand fits; demand is monotone in ``w``, so that float is the one where
  the demand's predicate flips.  Between two consecutive changes of the funded set (a *piece*:
  the counts of queries below the cut-off, below the uncapped limit and below the capped limit
  are constant) the demand has a closed form: ``P[n1] + n1 x* + n2 b_max`` (real), and
  ``sum floor(tau_i) + n1 floor(x*) + #{frac(tau_i) >= 1 - frac(x*)}`` (whole tokens, one order
  statistic of the fractional parts).  The search walks pieces from the previous arrival's price
  (a warm start: the price moves little from one arrival to the next), solves inside the piece
  or, when the predicate flips at a change of the funded set, locates that change from its own
  closed form (the cut-off, uncapped and capped limits are explicit in ``w``), and then pins the
  exact float by evaluating the *reference's own* demand expressions a few ulps around it
  (galloping, then bisection on the floats' bit patterns).  So every comparison that decides
  the result is the reference's, on the same floats.
* **Usually the price is found by rank** (:meth:`SlidingMarket._at_event`): a query leaving
  the cut-off drops the whole-token demand by its whole cap, so the whole-token price is
  mostly the w at which one threshold leaves.  Its rank comes from a gallop and bisection over
  the sorted window on a scalar estimate of the demand there (prefix sum + c x*, half a token
  per query lost to rounding), started from the previous arrival's rank; the candidate is
  pinned to the float of the reference's cut-off test and accepted only if the reference's
  predicate holds there and not one float below.  The predicate is monotone, so that float is
  its only flip: the walk would return the same one (tested), in ~2 demand evaluations
  instead of ~6 probes.  If the check fails (the flip is inside a piece, or caps move the
  demand) the walk runs.
* **Only the new query's cap is computed**: its budget at the price, the spare tokens
  (``floor(budget)`` minus the whole-token demand, one vectorised sum, memoised with the
  floors for the price search), the next-in-line rule (the cheapest abandoned threshold is at
  a known rank of the sorted window) and the spread level (water-filling in closed form over
  the funded caps' headrooms, which the sorted window gives in order: one integer prefix sum
  and a bisection on it).

The two answers agree whenever the reference's bisection converges to the flip of a monotone
predicate, i.e. always except in rounding coincidences of a few ulps at a change of the funded
set (scipy's Lambert W at the capped limit is not monotone from one float to the next, so there
the smallest fitting w is not unique: the test accepts exactly that, shown); anything this class
cannot place (a flip below 2^-90, an unusual threshold such as -inf, a walk longer than its
limit) falls back to :class:`ClearMarket` itself (a probe so small that
``beta * w`` underflows to 0 just has an infinite cut-off,
:func:`~policies.clear_market.funding_cut`), and ``tests/policies/test_sliding_market.py``
checks the two against each other.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections import deque

import numpy as np
from scipy.special import lambertw

from policies.clear_market import ClearMarket, even_share, funding_cut, spread_level

_PACK, _UNPACK = struct.Struct("<d"), struct.Struct("<q")
#: below this the reference's 200-step bisection may stop before float resolution: fall back
_TINY = 2.0 ** -90
_MAX_PROBES = 48
_GALLOP = 2e-4  # first step away from the previous arrival's price (w)


def _bits(x: float) -> int:
    return _UNPACK.unpack(_PACK.pack(x))[0]


def _float(i: int) -> float:
    return _PACK.unpack(_UNPACK.pack(i))[0]


def first_true(pred, guess: float, lo: float, hi: float) -> float:
    """Smallest float in (lo, hi] where the monotone ``pred`` holds (False at lo, True at hi),
    searched from ``guess``: gallop outwards in ulps, then bisect on the bit patterns (for
    floats >= 0 their order is their bit patterns' order)."""
    a, b = _bits(lo), _bits(hi)
    i = _bits(guess) if guess == guess else b
    i = min(max(i, a + 1), b)
    step = 1
    if pred(_float(i)):
        b = i
        while b - step > a:
            j = b - step
            if pred(_float(j)):
                b, step = j, step * 2
            else:
                a = j
                break
    else:
        a = i
        while a + step < b:
            j = a + step
            if pred(_float(j)):
                b = j
                break
            a, step = j, step * 2
    while b - a > 1:
        m = (a + b) // 2
        if pred(_float(m)):
            b = m
        else:
            a = m
    return _float(b)


class _Fallback(Exception):
    """The fast search cannot place the price: use :class:`ClearMarket`."""


class SlidingMarket:
    """The predicted thresholds of the last ``history`` arrivals, sorted as they come.

    :meth:`post` adds an arrival and returns what ``ClearMarket(window).allocate(budget,
    leftover)`` gives it: ``(its whole-token cap, the price lambda / alpha)``.
    """

    def __init__(self, history: int, beta: float, b_max: float):
        if beta <= 0 or b_max <= 0:
            raise ValueError("beta and b_max must be > 0")
        self.beta, self.b_max = float(beta), float(b_max)
        self.hist: deque[float] = deque(maxlen=int(history))
        self.sl: list[float] = []  # the eligible thresholds of the window, sorted
        self.buf = np.empty(int(history))  # the same, as an array (first len(sl) entries)
        self.w_prev = 0.5
        self.j_prev = 1  # the rank :meth:`_at_event` found last
        self.fallbacks = 0  # how many arrivals the reference had to decide (for tests)
        self.ranked = 0  # how many whole-token prices the rank search placed (for tests)
        self.w = math.nan  # the level w of the last clearing (price = w exp(w - 1))

    # -- the window ---------------------------------------------------------------------------
    def push(self, tau: float) -> None:
        tau = float(tau)
        hist, sl, buf, b_max, isfinite = self.hist, self.sl, self.buf, self.b_max, math.isfinite
        fresh = isfinite(tau) and tau < b_max  # eligible: ClearMarket's finite, < b_max
        if len(hist) == hist.maxlen and isfinite(hist[0]) and hist[0] < b_max:
            m = len(sl)
            p = bisect_left(sl, hist[0])
            del sl[p]
            if fresh:  # one shift of the ranks between the leaving and the new threshold
                q = bisect_right(sl, tau)
                sl.insert(q, tau)
                if q > p:
                    buf[p:q] = buf[p + 1:q + 1]
                elif q < p:
                    buf[q + 1:p + 1] = buf[q:p]
                buf[q] = tau
            else:
                buf[p:m - 1] = buf[p + 1:m]
        elif fresh:
            m = len(sl)
            q = bisect_right(sl, tau)
            sl.insert(q, tau)  # insort, with the position it found
            buf[q + 1:m + 1] = buf[q:m]
            buf[q] = tau
        hist.append(tau)

    # -- the reference's expressions, evaluated exactly as ClearMarket does ------------------
    def _cap_hi(self, w: float) -> float:
        beta, b_max = self.beta, self.b_max
        c = w * math.exp(w - 1.0) * b_max
        if beta * c * math.e >= 1.0:
            return -math.inf
        if c <= 0:
            return b_max
        x_min = -lambertw(-beta * c, 0).real / beta
        return b_max - x_min

    def _key(self, w: float) -> tuple[int, int, int]:
        """(#tau < cut, #tau <= uncapped limit, #tau < capped limit) at w; the last is len
        when every query is uncapped-eligible (it then changes nothing).  Memoised for the
        current arrival."""
        k = self.keys.get(w)
        if k is None:
            k = self.keys[w] = self._key_at(w)
        return k

    def _key_at(self, w: float) -> tuple[int, int, int]:
        beta, sl = self.beta, self.sl
        xs = (1.0 - w) / beta
        cut = funding_cut(w, beta)
        nu = bisect_right(sl, self.b_max - xs)
        n = len(sl)
        ca = n if nu == n else bisect_left(sl, self._cap_hi(w))
        return bisect_left(sl, cut), nu, ca

    @staticmethod
    def _n12(key) -> tuple[int, int]:
        cc, nu, ca = key
        return min(cc, nu), max(ca - nu, 0)

    def _demand(self, w: float) -> float:
        """ClearMarket.demand(w) (the same float operations in the same order, on Python
        floats), memoised for the current arrival like :meth:`_key`."""
        d = self.dems.get(w)
        if d is None:
            k = self.keys.get(w)
            if k is None:
                k = self.keys[w] = self._key_at(w)
            cc, nu, ca = k
            n1 = cc if cc < nu else nu
            n2 = ca - nu if ca > nu else 0
            xs = (1.0 - w) / self.beta
            d = self.dems[w] = (self.cs.item(n1 - 1) if n1 > 0 else 0.0) + n1 * xs + n2 * self.b_max
        return d

    def _prefix(self, k: int) -> float:
        return self.cs.item(k - 1) if k > 0 else 0.0

    def _whole(self, w: float) -> int:
        """ClearMarket.whole_demand(w), memoised for the current arrival."""
        return self._floors(w)[1]

    def _floors(self, w: float) -> tuple[np.ndarray, int]:
        """(floor(tau_i + x*) of the funded uncapped queries, sorted; the whole-token demand)
        at w, memoised for the current arrival."""
        r = self.wholes.get(w)
        if r is None:
            n1, n2 = self._n12(self._key(w))
            xs = (1.0 - w) / self.beta
            fb = self.buf[:n1] + xs
            np.floor(fb, out=fb)
            r = self.wholes[w] = (fb, int(fb.sum()) + n2 * int(math.floor(self.b_max)))
        return r

    # -- closed forms inside a piece ----------------------------------------------------------
    def _root_real(self, key, budget: float) -> float:
        """w where the piece's demand P[n1] + n1 (1 - w) / beta + n2 b_max meets the budget."""
        n1, n2 = self._n12(key)
        rest = budget - float(self._prefix(n1)) - n2 * self.b_max
        if n1 == 0:
            return -math.inf if rest >= 0 else math.inf
        return 1.0 - self.beta * rest / n1

    def _root_whole(self, key, whole_budget: int) -> float:
        """w just above which the piece's whole-token demand fits ``whole_budget``: with
        t = budget - sum floor(tau_i) - n2 floor(b_max) = q n1 + m, the demand
        n1 floor(x) + #{frac_i >= 1 - frac(x)} first exceeds t at x = q + 1 - (the (m+1)-th
        largest fractional part)."""
        n1, n2 = self._n12(key)
        if self.frac is None:
            s = self.buf[:len(self.sl)]
            fl = np.floor(s)
            self.frac, self.fl_cs = s - fl, np.cumsum(fl)
        t = whole_budget - n2 * int(math.floor(self.b_max)) - (int(self.fl_cs[n1 - 1]) if n1 else 0)
        if n1 == 0:
            return -math.inf if t >= 0 else math.inf
        if t < 0:
            return math.inf
        q, m = divmod(t, n1)
        k = n1 - m - 1
        fk = float(np.partition(self.frac[:n1], k)[k])
        return 1.0 - self.beta * (q + 1 - fk)

    def _event_w(self, kind: int, s: float) -> float:
        """Approximate w at which threshold s changes status (kind 0: leaves the cut-off,
        1: becomes uncapped, 2: leaves the capped range)."""
        beta, b_max = self.beta, self.b_max
        if kind == 0:
            if s <= 0:
                return 1.0
            bs = beta * s
            return 2.0 / ((2.0 + bs) + math.sqrt(bs * (4.0 + bs)))
        if kind == 1:
            return 1.0 - beta * (b_max - s)
        x = b_max - s
        return float(lambertw(math.e * x * math.exp(-beta * x) / b_max, 0).real)

    def _event_pred(self, kind: int, s: float):
        beta, b_max = self.beta, self.b_max
        if kind == 0:
            return lambda w: not (s < funding_cut(w, beta))
        if kind == 1:
            return lambda w: s <= b_max - (1.0 - w) / beta
        return lambda w: not (s < self._cap_hi(w))

    def _events(self, klo, khi):
        """The status changes between two keys, as (how many, the middle one (kind, sorted
        index)), or None if the keys do not say (one of them has no capped count).  Changes of
        equal thresholds of one kind happen at the same w: they count as one."""
        (c0, u0, a0), (c1, u1, a1) = klo, khi
        n = len(self.sl)
        if u0 == n or u1 == n:  # the capped count is a placeholder there
            if not (u0 == n and u1 == n):
                return None
            a0 = a1 = 0
        if c1 > c0 or u1 < u0 or a1 > a0:
            return None
        runs = ((0, c1, c0 - c1), (1, u0, u1 - u0), (2, a1, a0 - a1))
        total = (c0 - c1) + (u1 - u0) + (a0 - a1)
        for kind, start, count in runs:  # equal thresholds change status at the same w
            if count == total and total > 1 and self.sl[start] == self.sl[start + count - 1]:
                return 1, (kind, start)
        mid = total // 2
        for kind, start, count in runs:
            if mid < count:
                return total, (kind, start + mid)
            mid -= count
        return 0, None

    def _local_whole(self, key, w0: float, budget: float):
        """``whole(w) <= budget`` for w near w0 inside the piece ``key``: the floors of
        tau_i + x* that are not within 1e-6 of an integer at w0 cannot change while x* moves
        by less than 1e-7, so only the few others are re-floored (exactly as
        :meth:`_whole` does); farther away it calls :meth:`_whole`."""
        n1, n2 = self._n12(key)
        beta = self.beta
        xs0 = (1.0 - w0) / beta
        v = self.buf[:n1] + xs0
        fv = np.floor(v)
        near = (v - fv < 1e-6) | (v - fv > 1.0 - 1e-6)
        crit = self.buf[:n1][near].tolist()
        base = int(fv[~near].sum()) + n2 * int(math.floor(self.b_max))

        def pred(w: float) -> bool:
            xs = (1.0 - w) / beta
            if abs(xs - xs0) >= 1e-7:
                return self._whole(w) <= budget
            return base + sum(math.floor(c + xs) for c in crit) <= budget

        return pred

    def _solve(self, pred, root, guess: float, lo: float = 0.0, hi: float = 1.0,
               local=None) -> float:
        """Smallest float w in (lo, hi] where ``pred`` holds (False at lo, True at hi; by
        default 0 and 1).  ``root(key, exact)`` places the flip inside a piece: exactly when
        ``exact``, else any cheap estimate (to choose the next probe)."""
        klo, khi = self._key(lo), self._key(hi)
        probe = guess
        near, first = None, True  # (side that moved: +1 hi, -1 lo; step in w) while galloping
        for _ in range(_MAX_PROBES):
            if klo == khi:  # one piece: its closed form places the flip
                g = root(klo, True)
                if local is not None and lo < g < hi:
                    pred = local(klo, g)
                return first_true(pred, g, lo, hi)
            ev = self._events(klo, khi)
            if ev is not None and ev[0] == 1:  # one change of the funded set in between
                kind, i = ev[1]
                e = first_true(self._event_pred(kind, self.sl[i]),
                               self._event_w(kind, self.sl[i]), lo, hi)
                if pred(e):
                    before = math.nextafter(e, 0.0)
                    if before <= lo or not pred(before):
                        return e  # the flip is the change itself (a jump of demand)
                    hi, khi = before, klo
                else:
                    lo, klo = e, khi
                continue
            if not (lo < probe < hi) and near is not None:  # gallop away from the warm start
                side, step = near
                probe = guess - side * step
            if not (lo < probe < hi):
                probe = None
                if ev is not None and ev[1] is not None:
                    probe = self._event_w(*ev[1][:1], self.sl[ev[1][1]])
                if probe is None or not (lo < probe < hi):
                    probe = 0.5 * (lo + hi)
            k = self._key(probe)
            side = 1 if pred(probe) else -1
            if side > 0:
                hi, khi = probe, k
            else:
                lo, klo = probe, k
            if first:  # the warm start: look near it first, then farther and farther
                near, first = (side, _GALLOP), False
            elif near is not None:
                near = (side, near[1] * 4) if side == near[0] else None  # bracketed: bisect
            r = root(k, False)
            probe = r if lo < r < hi and r != probe else -1.0  # -1: choose again
        raise _Fallback

    def _at_event(self, budget: float):
        """The whole-token price when it is the w at which one threshold leaves the cut-off
        (the usual case: a query leaving drops the demand by its whole cap), else None.

        The candidate is the c-th lowest threshold for the largest c whose estimated demand
        there (c funded queries at that w's x*, about half a token each lost to rounding
        down) is within ``budget``, found by galloping over ranks from the previous arrival's
        (the estimate grows with c).  Its w is pinned to the float where its status flips
        (:func:`first_true` on the reference's cut-off test) and accepted only if ``pred``
        holds there and not one float below: the predicate is monotone, so that float is its
        only flip, the one :meth:`_solve` finds from any start."""
        n = len(self.sl)
        if n < 2:
            return None
        cs, sl, beta, sqrt = self.cs, self.sl, self.beta, math.sqrt

        def est(j):  # estimated whole demand just above the event of rank j (j funded)
            bs = beta * sl[j]  # w of its event: _event_w(0, sl[j])
            e = 2.0 / ((2.0 + bs) + sqrt(bs * (4.0 + bs))) if bs > 0 else 1.0
            return cs.item(j - 1) + j * ((1.0 - e) / beta - 0.5)

        j = min(max(self.j_prev, 1), n - 1)
        if est(j) <= budget:  # answer at rank >= j: gallop up
            lo, step = j, 1
            hi = n
            while lo + step < n:
                if est(lo + step) <= budget:
                    lo, step = lo + step, step * 2
                else:
                    hi = lo + step
                    break
        else:  # gallop down
            hi, step = j, 1
            lo = 0
            while hi - step >= 1:
                if est(hi - step) <= budget:
                    lo = hi - step
                    break
                hi, step = hi - step, step * 2
        while hi - lo > 1:  # est(lo) <= budget < est(hi) (lo 0: none fits)
            m = (lo + hi) // 2
            if est(m) <= budget:
                lo = m
            else:
                hi = m
        if lo < 1:
            return None
        self.j_prev = lo
        e = self._leaves_at(self.sl[lo])
        if e < 1.0 and self._fits_whole(e, budget) and self._misses_below(e, budget):
            self.ranked += 1
            return e
        return None

    def _leaves_at(self, t: float) -> float:
        """The smallest float w in (0, 1] at which threshold ``t`` is no longer funded:
        ``first_true(self._event_pred(0, t), self._event_w(0, t), 0, 1)``, found by stepping
        ulp by ulp from the closed form (which is within a few ulps), else by
        :func:`first_true` itself.  The predicate is monotone, so its flip is unique and both
        find the same float."""
        beta, cut, nextafter = self.beta, funding_cut, math.nextafter
        guess = g = self._event_w(0, t)
        if 0.0 < g <= 1.0:
            if not t < cut(g, beta):  # holds at g: step down while it holds one ulp below
                for _ in range(8):
                    p = nextafter(g, 0.0)
                    if p <= 0.0 or t < cut(p, beta):
                        return g
                    g = p
            else:  # step up to the first float where it holds
                for _ in range(8):
                    g = nextafter(g, 2.0)
                    if g > 1.0:
                        break
                    if not t < cut(g, beta):
                        return g
        return first_true(self._event_pred(0, t), guess, 0.0, 1.0)

    def _misses_below(self, e: float, budget: float) -> bool:
        """``not _fits_whole(b, budget)`` for b the float just below ``e`` (where
        ``_fits_whole`` holds).  When it needs the whole-token demand at b, a lower bound
        usually settles it without the vectorised sum: if b funds the same queries as e plus
        some more (same uncapped and capped counts), every floor(tau + x*) is at least its
        value at e (x* only grows as w falls), so whole(b) >= whole(e) + the new queries'
        floors."""
        b = math.nextafter(e, 0.0)
        fits = self._fits_by_demand(b, budget)
        if fits is not None:
            return not fits
        cc, nu, ca = self.keys[b]
        n1 = cc if cc < nu else nu
        ce, ue, ae = self._key(e)
        n1e = ce if ce < ue else ue
        if ue == nu and ae == ca and n1e <= n1 <= n1e + 16:
            xs, floor = (1.0 - b) / self.beta, math.floor
            low = self._floors(e)[1] + sum(floor(x + xs) for x in self.sl[n1e:n1])
            if low > budget:
                return True
        return not self._whole(b) <= budget

    def _fits_whole(self, v: float, budget: float) -> bool:
        """``whole_demand(v) <= budget``: from the real demand when that decides it
        (:meth:`_fits_by_demand`), else by summing the floors."""
        fits = self._fits_by_demand(v, budget)
        return self._whole(v) <= budget if fits is None else fits

    def _fits_by_demand(self, v: float, budget: float) -> bool | None:
        """``whole_demand(v) <= budget`` decided from the real demand D alone, or None: the
        whole demand lies in [D - n1, D] up to rounding (each of the n1 floors loses < 1
        token)."""
        d = self._demand(v)
        cc, nu, _ = self.keys[v]  # set by _demand
        n1 = cc if cc < nu else nu
        slack = 1e-6 * (abs(d) + 1.0)
        if d + slack <= budget:
            return True
        if d - n1 - slack > budget:
            return False
        return None

    # -- one arrival ---------------------------------------------------------------------------
    def post(self, tau: float, budget: float, leftover: str = "spread") -> tuple[int, float]:
        """Add an arrival with predicted threshold ``tau`` and :meth:`allocate_last`."""
        self.push(tau)
        return self.allocate_last(budget, leftover)

    def allocate_last(self, budget: float, leftover: str = "spread") -> tuple[int, float]:
        """Clear the window's market for ``budget`` tokens; return (the newest arrival's cap,
        the price lambda / alpha): ``ClearMarket(window).allocate(budget, leftover)``'s."""
        tau = self.hist[-1]
        try:
            if tau == -math.inf or not budget >= 0:
                raise _Fallback
            return self._post(tau, float(budget), leftover)
        except _Fallback:
            self.fallbacks += 1
            res = ClearMarket(np.fromiter(self.hist, float), self.beta, self.b_max).allocate(
                budget, leftover)
            self.w = res.w
            return int(res.budgets[-1]), res.price

    def _post(self, tau: float, budget: float, leftover: str) -> tuple[int, float]:
        n = len(self.sl)
        s = self.buf[:n]
        self.cs = s.cumsum()
        beta, b_max = self.beta, self.b_max
        bm = int(math.floor(b_max))
        whole_budget = int(math.floor(budget))
        self.keys, self.dems, self.wholes = {}, {}, {}
        if self._demand(0.0) <= budget:
            w = 0.0
        else:
            self.frac = None  # the fractional parts, computed when a piece needs them

            def root_whole(k, exact):  # estimates overshoot: probe changes of the set instead
                return self._root_whole(k, whole_budget) if exact else math.nan

            def fits_whole(v):
                return self._fits_whole(v, budget)

            if fits_whole(0.0):
                ww = 0.0
            else:
                ww = self._at_event(budget)
                if ww is None:
                    ww = self._solve(fits_whole, root_whole, self.w_prev,
                                     local=lambda k, g: self._local_whole(k, g, budget))
            d = self._demand(ww)
            if d <= budget:  # the real clearing price is at most ww: it is the answer
                w = ww
                before = math.nextafter(ww, 0.0)
                if ww > 0 and self._demand(before) <= budget:
                    w = self._solve(lambda v: self._demand(v) <= budget,
                                    lambda k, _: self._root_real(k, budget), ww, hi=before)
            elif d > budget + n:  # below the real clearing price for budget + n
                b2 = budget + n
                if self._demand(0.0) <= b2:
                    raise _Fallback
                w = self._solve(lambda v: self._demand(v) <= b2,
                                lambda k, _: self._root_real(k, b2), ww, lo=ww)
            else:
                w = ww
            if 0.0 < w < _TINY:
                raise _Fallback
            if w > 0.0:
                self.w_prev = w
        # the allocation at w, for the new query (ClearMarket.budgets_at / allocate)
        key = self._key(w)
        n1, n2 = self._n12(key)
        xs = (1.0 - w) / beta
        cut = funding_cut(w, beta)
        unc_hi = b_max - xs
        fb, whole = self._floors(w)
        spare = whole_budget - whole  # floor(budget) - the whole-token demand
        mine = 0
        if tau < cut and tau <= unc_hi:
            mine = int(math.floor(tau + xs))
        elif tau > unc_hi and tau < b_max and tau < self._cap_hi(w):
            mine = int(b_max)
        give = None  # the next-in-line query's new cap
        if leftover in ("next-in-line", "spread") and spare > 0:
            cheapest = None  # smallest eligible threshold with a cap of 0
            if n1 and fb.item(0) == 0:
                cheapest = self.sl[0]
            elif n1 < key[1]:
                cheapest = self.sl[n1]
            elif key[1] + n2 < n:
                cheapest = self.sl[key[1] + n2]
            if cheapest is not None and spare >= math.ceil(cheapest):
                g = min(spare, math.floor(cheapest + xs), int(b_max))
                first = (cheapest == tau and
                         bisect_right(self.sl, tau) - bisect_left(self.sl, tau) == 1)
                if first:
                    mine = g
                give = g  # the next-in-line query's cap (it had none: not among fb > 0)
                spare -= g
        if leftover == "spread" and spare > 0 and 0 < mine < bm:
            # the funded caps floor(tau + x*) rise with tau: those in (0, b_max) are a run
            # of ranks, and their headrooms b_max - cap, read backwards, are sorted
            # whole-valued caps: i0 = #{fb < 0.5}, i1 = #{fb < bm - 0.5} (fb ascending; the
            # ends decide the usual case without a search)
            k1 = len(fb)
            i0 = 0 if k1 == 0 or fb.item(0) >= 0.5 else int(fb.searchsorted(0.5))
            i1 = k1 if k1 == 0 or fb.item(k1 - 1) < bm - 0.5 else int(fb.searchsorted(bm - 0.5))
            extra = give is not None and 0 < give < bm
            m = i1 - i0 + extra
            if spare >= m:  # else no level of 1 or more fits
                least = min(bm - int(fb.item(i1 - 1)) if i1 > i0 else bm, bm - give if extra else bm)
                level = even_share(spare, m, least)
                if level is None:
                    heads = (bm - fb[i0:i1][::-1]).astype(np.int64)
                    if extra:
                        heads = np.insert(heads, int(np.searchsorted(heads, bm - give)), bm - give)
                    level = spread_level(heads, spare, presorted=True)
                mine += min(bm - mine, level)
        self.w = w
        return mine, w * math.exp(w - 1.0)

