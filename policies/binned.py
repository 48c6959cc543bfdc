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

Each query gets its bin's budget on arrival, so the budget holds on average over the traffic
the split represents (a mean, not per query: a hard bin's budget exceeds the target by design).
"""

from __future__ import annotations

import math

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.mckp import solve_mckp
from policies.oracle import B_MAX
from sim.spec import Field, positive


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

    def __init__(self, params, ctx, label=None):
        super().__init__(params, ctx, label)
        if ctx.training is None:
            raise RuntimeError("binned needs RunContext.training (the runner sets it)")
        self.edges, self.levels = self.tune()

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
        levels = np.where(count > 0, res.budgets // np.maximum(count, 1), 0)
        return edges, levels.astype(np.int64)

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        return Allocation(self.levels[self.bin_of(view.tau_pred)].astype(np.int64))

    def allocate_each(self, view: QueryView, budget_each: float) -> np.ndarray:
        return self.allocate(view, budget_each).budgets  # per-bin levels: budget-independent
