"""Deliberately bad policies, for tests only (as BLIS does): they exercise the edges of the
simulator and of the metrics.  ``reject-all`` abandons every query; ``all-to-one`` gives a whole
batch's budget to its first query and abandons the rest."""

from __future__ import annotations

import math

import numpy as np

from policies.base import Allocation, Policy, QueryView, Timing, register
from policies.oracle import BATCH


class _Batch(Policy):
    PARAMS = {"batch": BATCH}

    @property
    def timing(self) -> Timing:
        return Timing("batch", batch_size=self.params["batch"])


@register
class RejectAll(_Batch):
    name = "reject-all"
    doc = "TESTS ONLY: abandons every query"

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        return Allocation(np.zeros(len(view), dtype=np.int64))


@register
class AllToOne(_Batch):
    name = "all-to-one"
    doc = "TESTS ONLY: the whole batch budget to the batch's first query, the rest abandoned"

    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation:
        b = np.zeros(len(view), dtype=np.int64)
        if len(b):
            b[0] = max(int(math.floor(budget_tokens)), 0)
        return Allocation(b)
