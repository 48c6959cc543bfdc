"""``uniform``: every query gets the target budget as its cap, decided on arrival."""

from __future__ import annotations

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register


@register
class Uniform(Policy):
    name = "uniform"
    doc = "every query gets the target budget (mean tokens per query) as its cap, on arrival"
    PARAMS = {}

    @property
    def timing(self) -> Timing:
        return Timing("immediate")

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        n = len(view)
        each = int(np.floor(budget_tokens / n)) if n else 0
        return Allocation(np.full(n, each, dtype=np.int64))

    def allocate_each(self, view: QueryView, budget_each: float) -> np.ndarray:
        return np.full(len(view), int(np.floor(budget_each)), dtype=np.int64)
