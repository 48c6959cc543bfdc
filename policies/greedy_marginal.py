"""``greedy-marginal``: hand out tokens where the predicted marginal gain is largest.

As in *Learning How Hard to Think* (Damani et al., 2024): each query's accuracy is predicted as
a function of its budget and increments go, greedily, to the query whose next increment gains
the most per token.  Our predicted curve is the fitted model of the traces (README, Traces):
acc_hat_i(b) = GammaCDF(b - tau_pred_i; shape 2, rate beta), on the grid 0, ``step``, 2 ``step``,
..., ``b_max``.  These curves are S-shaped (zero gain below tau), where plain one-step greedy
would never start a query whose threshold is above one increment, so the marginal gain of a
query's next move is its best *average* gain per token to any higher grid point, i.e. greedy on
the upper concave hull of its curve (:mod:`policies.mckp`, the Lagrangian path, no exact DP).
It differs from ``clear`` in the objective (predicted accuracy instead of the surge utility) and
in deciding on a grid.
"""

from __future__ import annotations

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.clear import _beta, gamma2_cdf
from policies.mckp import solve_mckp
from policies.oracle import B_MAX, BATCH
from sim.foundation.spec import Field, positive


@register
class GreedyMarginal(Policy):
    name = "greedy-marginal"
    doc = "greedy by predicted marginal accuracy per token on fitted curves (Damani et al.)"
    PARAMS = {
        "batch": BATCH,
        "b_max": B_MAX,
        "step": Field((int,), 32, "grid step of the budgets considered (tokens)", check=positive),
        "beta": Field((float, str), "fitted", "decay rate of the fitted curves; 'fitted' = "
                      "from the scenario's traces", check=_beta),
    }

    @property
    def timing(self) -> Timing:
        return Timing("batch", batch_size=self.params["batch"])

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        p = self.params
        beta = self.ctx.fitted_beta if p["beta"] == "fitted" else float(p["beta"])
        grid = np.arange(0, p["b_max"] + 1, p["step"], dtype=float)
        tau = np.asarray(view.tau_pred, dtype=float)
        values = gamma2_cdf(grid[None, :] - tau[:, None], beta)
        values[:, 0] = 0.0
        costs = np.broadcast_to(grid, values.shape)
        res = solve_mckp(costs, values, budget_tokens, exact_limit=0)
        return Allocation(res.budgets, shadow_price=res.price)
