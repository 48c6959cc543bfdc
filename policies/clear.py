"""``clear`` (the paper's batch allocation) and ``clear-windowed`` (the same market, cleared
every W seconds over the queries that arrived in the window, with the window's share of the
budget).  The maths lives in :mod:`policies.clear_market`."""

from __future__ import annotations

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.clear_market import ClearMarket
from sim.spec import Field, positive


def _beta(v) -> str | None:
    if v == "fitted" or (not isinstance(v, str) and v > 0):
        return None
    return "expected 'fitted' or a number > 0"


CLEAR_PARAMS = {
    "beta": Field((float, str), "fitted", "decay rate of the surge; 'fitted' = estimated from the "
                  "scenario's traces (README, Traces)", check=_beta),
    "alpha": Field((float,), 1.5, "utility scale; does not change the allocation (scale "
                   "invariance), kept for reported utilities", check=positive),
    "b_max": Field((int,), 4096, "largest cap any query may get (tokens)", check=positive),
    "leftover": Field((str,), "next-in-line", "tokens left by the last abandonment jump: "
                      "'next-in-line' funds the cheapest abandoned query if they cover its "
                      "threshold, 'none' leaves them unspent", choices=("next-in-line", "none")),
}


class _ClearBase(Policy):
    def _market_allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        p = self.params
        beta = self.ctx.fitted_beta if p["beta"] == "fitted" else float(p["beta"])
        res = ClearMarket(view.tau_pred, beta, p["b_max"]).allocate(budget_tokens, p["leftover"])
        return Allocation(res.budgets, shadow_price=res.price)

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        return self._market_allocate(view, budget_tokens)


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
    doc = "CLEAR every `window_s` seconds over the queries that arrived in the window"
    PARAMS = {
        **CLEAR_PARAMS,
        "window_s": Field((float,), 10.0, "allocation window (seconds)", check=positive),
    }

    @property
    def timing(self) -> Timing:
        return Timing("window", window_s=self.params["window_s"])
