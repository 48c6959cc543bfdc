"""Allocation policies behind one small interface (:mod:`policies.base`), selected by name."""

from policies.base import REGISTRY, Allocation, Policy, QueryView, RunContext, Timing
from policies import uniform as _uniform, clear as _clear  # noqa: F401  (register)
from policies import (  # noqa: F401  (register)
    binned as _binned,
    clear_posted as _clear_posted,
    early_exit as _early_exit,
    greedy_marginal as _greedy_marginal,
    oracle as _oracle,
    pathological as _pathological,
    proportional as _proportional,
)

__all__ = ["REGISTRY", "Allocation", "Policy", "QueryView", "RunContext", "Timing"]
