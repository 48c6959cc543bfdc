"""``proportional``: caps proportional to the predicted threshold, the paper's baseline.

b_i = B tau_i / sum_j tau_j over the batch (harder-looking queries get more), each capped at
``b_max``; budget freed by the cap is spread over the uncapped queries in the same proportions
(water-filling, at most a few rounds), and caps are floored to whole tokens, so the sum never
exceeds the budget.  A prediction of +inf (the ``oracle`` predictor on a never-solved query)
counts as ``b_max``: proportionality has no notion of abandoning.
"""

from __future__ import annotations

import math

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.oracle import B_MAX, BATCH


def proportional_caps(tau: np.ndarray, budget: float, b_max: float) -> np.ndarray:
    weight = np.minimum(np.nan_to_num(np.asarray(tau, dtype=float), posinf=b_max), b_max)
    weight = np.maximum(weight, 0.0)
    n = len(weight)
    caps = np.zeros(n)
    free = np.ones(n, dtype=bool)
    left = max(float(budget), 0.0)
    for _ in range(n + 1):  # each round caps at least one more query or finishes
        w = weight[free].sum()
        if left <= 0 or w <= 0 or not free.any():
            break
        share = left * weight / w
        over = free & (share >= b_max)
        if not over.any():
            caps[free] = share[free]
            break
        caps[over] = b_max
        left -= b_max * over.sum()
        free &= ~over
    return np.floor(np.minimum(caps, b_max)).astype(np.int64)


@register
class Proportional(Policy):
    name = "proportional"
    doc = "caps proportional to the predicted tau over each batch (the paper's baseline)"
    PARAMS = {"batch": BATCH, "b_max": B_MAX}

    @property
    def timing(self) -> Timing:
        return Timing("batch", batch_size=self.params["batch"])

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        caps = proportional_caps(view.tau_pred, budget_tokens, self.params["b_max"])
        while caps.sum() > math.floor(budget_tokens):  # float rounding guard (never in practice)
            caps[np.argmax(caps)] -= 1
        return Allocation(caps)
