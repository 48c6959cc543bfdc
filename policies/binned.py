"""``binned``: difficulty bins with per-bin budgets tuned on a training split.

As in *Scaling LLM Test-Time Compute Optimally* (Snell et al., 2024): estimate each query's
difficulty, put it in one of ``bins`` bins, and give every query of a bin the same budget,
chosen per bin to maximise accuracy on training data.  Here difficulty is the predicted tau;
bin edges are quantiles of the training split's predictions (:mod:`policies.training`, half the
trace queries with the scenario's predictor); a prediction of +inf falls in the hardest bin.
The per-bin budgets, on the grid 0, ``step``, ..., ``b_max``, maximise the split's mean accuracy
with mean tokens per query <= the target: a small multiple-choice knapsack (one row per bin,
cost = budget x queries in the bin), solved exactly by dynamic programming
(:mod:`policies.mckp`).  Budget 0 for a bin is allowed, so binned can abandon a whole bin.

**Budget the knapsack leaves unspent is spread** (ours): the split's accuracy stops rising at
its longest recorded correct length, so at large budgets the knapsack picks the cheapest caps
that reach it (1,408-2,112 tokens on the shipped traces) and leaves the rest unused, while an
arriving query may need more.  The spare budget raises every funded bin's budget by the same
number of tokens (weighted by the bin's size, up to ``b_max``), then, once all are at
``b_max``, the abandoned bins' too; so at a budget of ``b_max`` per query every bin gets
``b_max``, and at scarce budgets (nothing spare) the tuned budgets are unchanged.

Each query gets its bin's budget on arrival, clipped to a running account of the budget
(:mod:`policies.account`): tokens generated never exceed target x arrivals at any point of the
run.  Without it the budget would hold only on average over the traffic the split represents
(a hard bin's budget exceeds the target by design, and a hard-heavy stream would overspend).
"""

from __future__ import annotations

import math

import numpy as np

from policies.account import BudgetAccount
from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.clear_market import spread_evenly
from policies.mckp import solve_mckp
from policies.oracle import B_MAX
from sim.foundation.spec import Field, positive


@register
class Binned(Policy):
    name = "binned"
    doc = "per-difficulty-bin budgets tuned on a training split (Snell et al.), on arrival"
    PARAMS = {
        "bins": Field((int,), 4, "number of difficulty bins (quantiles of predicted tau)",
                      check=positive),
        "step": Field((int,), 32, "grid step of the per-bin budgets (tokens)", check=positive),
        "b_max": B_MAX,
    }
    needs_training = True
    wants_feedback = True

    def __init__(self, params, ctx, label=None):
        super().__init__(params, ctx, label)
        if ctx.training is None:
            raise RuntimeError("binned needs RunContext.training (the runner sets it)")
        self.edges, self.levels = self.tune()
        self.account = BudgetAccount(ctx.target_tokens_per_query, ctx.token_rate)

    @property
    def timing(self) -> Timing:
        return Timing("immediate")

    def bin_of(self, tau: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges, np.asarray(tau, dtype=float), side="right")

    def tune(self) -> tuple[np.ndarray, np.ndarray]:
        """(inner bin edges, budget per bin) maximising training accuracy at the target."""
        p, tr = self.params, self.ctx.training
        tau = np.asarray(tr.tau_pred, dtype=float)
        finite = tau[np.isfinite(tau)]
        qs = np.linspace(0, 1, p["bins"] + 1)[1:-1]
        edges = np.unique(np.quantile(finite, qs)) if len(finite) else np.zeros(0)
        b = np.searchsorted(edges, tau, side="right")
        grid = np.arange(0, p["b_max"] + 1, p["step"])
        acc = tr.accuracy(grid)  # training queries x grid
        nb = len(edges) + 1
        count = np.bincount(b, minlength=nb)
        value = np.stack([acc[b == k].sum(axis=0) for k in range(nb)])  # correct answers
        costs = np.outer(count, grid)
        budget = math.floor(self.ctx.target_tokens_per_query * len(tau))
        res = solve_mckp(costs, value, budget, exact_limit=10**9)
        levels = np.where(count > 0, res.budgets // np.maximum(count, 1), 0).astype(np.int64)
        spare = budget - int((count * levels).sum())
        for open_ in (levels > 0, levels == 0):  # funded bins first, then abandoned ones
            spare = spread_evenly(levels, spare, p["b_max"], open_ & (count > 0), weight=count)
        return edges, levels

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        caps = self.levels[self.bin_of(view.tau_pred)].astype(np.int64)
        for i in range(len(caps)):
            now = float(view.arrival_s[i])
            self.account.arrive()
            caps[i] = self.account.clip(int(caps[i]), now)
            self.account.commit(int(caps[i]))
        return Allocation(caps)

    def on_finished(self, budgets: np.ndarray, tokens_generated: np.ndarray, now: float) -> None:
        self.account.finished(budgets, tokens_generated)

