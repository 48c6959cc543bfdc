"""``clear`` (the paper's batch allocation) and ``clear-windowed`` (the same market, cleared
every W seconds and/or every k arrivals over the queries waiting, with the window's share of
the budget plus the carry-over).  The maths lives in :mod:`policies.clear_market`.

**Carry-over** (``carry_over: unused``; the default ``none`` keeps every group within its own
share, the paper's setting): a decision group gets its share of the
budget plus the tokens given to earlier groups and not used: budgets not allocated (the
leftover of the last abandonment jump, flooring) and caps not generated (a completion that
stops before its cap; learnt from completion feedback, as a server would).  Unfinished requests
count at their full cap, so every token generated is covered by budget already given: over a
run, tokens generated never exceed the target times the arrivals.  The carry a group may take
is bounded by ``carry_max`` times its own share (the rest stays in the pool for later groups),
so one window cannot absorb a long run's savings.  With ``batch: null`` (the whole run) there is
nothing to carry.

**Rollover** (always, whatever ``carry_over``): a decision group in which no query is fundable
(every predicted threshold above what its share buys: the rule for a window of one query at a
scarce budget) allocates nothing, and its whole share passes to the next group, adding up until
some group can fund a query; only then is it "given".  Without it a per-query market
(``every_k: 1`` or a tiny ``window_s``) abandons every query whose threshold exceeds the
per-query budget, i.e. everything at a scarce budget, and throws the budget away.  The rollover
is not bounded by ``carry_max``: it is budget no query was given, and it is spent at once by the
first group that can use it.  Totals are unchanged: caps never exceed the shares handed in so
far, so over a run the tokens allocated never exceed the target times the arrivals.

**Adaptive beta** (``beta: adaptive``, ours, not the paper's: its rule is not public): for each
decision group the market is cleared with beta in fitted x 2^(k/2), k = -4..4, and the
allocation with the highest predicted accuracy under the fitted model,
sum_i GammaCDF(b_i - tau_pred_i; 2, beta_fitted), is kept.  CLEAR's surge utility is a proxy
for accuracy; this tunes the proxy's one shape parameter, per group, against the model it
stands for, using only predictions (no outcome).
"""

from __future__ import annotations

import math

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.clear_market import ClearMarket
from sim.foundation.spec import Field, non_negative, positive
from traces.fit import gamma2_cdf


def _beta(v) -> str | None:
    """beta of policies without the 'adaptive' option (clear-posted, greedy-marginal)."""
    if v == "fitted" or (not isinstance(v, str) and v > 0):
        return None
    return "expected 'fitted' or a number > 0"


def _beta_clear(v) -> str | None:
    if v in ("fitted", "adaptive") or (not isinstance(v, str) and v > 0):
        return None
    return "expected 'fitted', 'adaptive' or a number > 0"


ADAPTIVE_FACTORS = tuple(2.0 ** (k / 2) for k in (0, -1, 1, -2, 2, -3, 3, -4, 4))


CLEAR_PARAMS = {
    "beta": Field((float, str), "fitted", "decay rate of the surge; 'fitted' = estimated from the "
                  "scenario's traces (README, Traces); 'adaptive' = ours, tuned per decision "
                  "group (docs/clear.md)", check=_beta_clear),
    "alpha": Field((float,), 1.5, "utility scale; does not change the allocation (scale "
                   "invariance), kept for reported utilities", check=positive),
    "b_max": Field((int,), 4096, "largest cap any query may get (tokens)", check=positive),
    "leftover": Field((str,), "spread", "tokens the clearing price leaves unspent (the "
                      "last abandonment jump; at price 0 everything beyond the peaks): "
                      "'next-in-line' funds the cheapest abandoned query if they cover its "
                      "threshold, 'spread' does that then raises every funded cap equally, "
                      "'none' leaves them unspent",
                      choices=("next-in-line", "spread", "none")),
    "carry_over": Field((str,), "none", "tokens given to earlier groups and not used: "
                        "'unused' adds them to the next group's budget (bounded by carry_max), "
                        "'none' drops them", choices=("unused", "none")),
    "carry_max": Field((float,), 1.0, "most carry-over one group may take, as a multiple of "
                       "its own share of the budget", check=non_negative),
}


def clear_with_beta(tau: np.ndarray, budget: float, beta: float | str, fitted: float,
                    b_max: int, leftover: str):
    """Clear one market; ``beta`` a number, or 'adaptive' (module doc). Returns ClearResult."""
    if beta != "adaptive":
        return ClearMarket(tau, float(beta), b_max).allocate(budget, leftover)
    best, best_score = None, -math.inf
    for f in ADAPTIVE_FACTORS:
        res = ClearMarket(tau, fitted * f, b_max).allocate(budget, leftover)
        funded = res.budgets > 0
        score = float(gamma2_cdf(res.budgets[funded] - tau[funded], fitted).sum())
        if score > best_score + 1e-12:
            best, best_score = res, score
    return best


class _ClearBase(Policy):
    wants_feedback = True

    def __init__(self, params, ctx, label=None):
        super().__init__(params, ctx, label)
        self.given = 0.0  # budget handed to decision groups so far
        self.generated = 0  # tokens generated by finished requests
        self.outstanding = 0  # caps of requests not finished yet
        self.rollover = 0.0  # budget of groups that funded no one, passed on (module doc)
        # completions only matter to the carry-over (saves a call per completion otherwise)
        self.wants_feedback = params.get("carry_over") == "unused"

    def carry(self, budget_tokens: float) -> float:
        """Unused tokens of earlier groups this group may add (module doc)."""
        if self.params["carry_over"] == "none":
            return 0.0
        pool = self.given - self.generated - self.outstanding
        return float(min(max(pool, 0.0), self.params["carry_max"] * budget_tokens))

    def _market_allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        p = self.params
        beta = self.ctx.fitted_beta if p["beta"] == "fitted" else p["beta"]
        extra = self.carry(budget_tokens)
        share = budget_tokens + self.rollover
        tau = np.asarray(view.tau_pred, dtype=float)
        res = clear_with_beta(tau, share + extra, beta, self.ctx.fitted_beta,
                              p["b_max"], p["leftover"])
        if res.budgets.sum() == 0:  # no one fundable: the share waits for the next group
            self.rollover = share
            return Allocation(res.budgets, shadow_price=res.price)
        self.rollover = 0.0
        self.given += share
        self.outstanding += int(res.budgets.sum())
        return Allocation(res.budgets, shadow_price=res.price)

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        return self._market_allocate(view, budget_tokens)

    def on_finished(self, budgets: np.ndarray, tokens_generated: np.ndarray, now: float) -> None:
        self.generated += int(np.sum(tokens_generated))
        self.outstanding -= int(np.sum(budgets))


@register
class Clear(_ClearBase):
    name = "clear"
    doc = ("CLEAR batch allocation (shadow price, rational abandonment) over every `batch` "
           "arrivals; batch: null = the whole run, as in the paper")
    PARAMS = {
        **CLEAR_PARAMS,
        "batch": Field((int,), None, "queries per allocation batch; null = the whole run",
                       check=positive, nullable=True),
    }

    @property
    def timing(self) -> Timing:
        return Timing("batch", batch_size=self.params["batch"])


@register
class ClearWindowed(_ClearBase):
    name = "clear-windowed"
    doc = ("CLEAR every `window_s` seconds and/or every `every_k` arrivals over the queries "
           "waiting, with the carry-over of unused tokens")
    PARAMS = {
        **CLEAR_PARAMS,
        "window_s": Field((float,), 10.0, "allocation window (seconds); null = close windows "
                          "by every_k only", check=positive, nullable=True),
        "every_k": Field((int,), None, "also close a window at its k-th arrival (whichever "
                         "comes first); null = by time only", check=positive, nullable=True),
    }

    @classmethod
    def check_params(cls, params: dict) -> str | None:
        if params["window_s"] is None and params["every_k"] is None:
            return "give window_s or every_k (or both); both are null"
        return None

    @property
    def timing(self) -> Timing:
        return Timing("window", window_s=self.params["window_s"], every_k=self.params["every_k"])
