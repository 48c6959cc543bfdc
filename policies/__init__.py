"""Allocation policies behind one small interface (:mod:`policies.base`), selected by name."""

from policies.base import REGISTRY, Allocation, Policy, QueryView, RunContext, Timing
from policies import uniform as _uniform, clear as _clear  # noqa: F401  (register)

__all__ = ["REGISTRY", "Allocation", "Policy", "QueryView", "RunContext", "Timing"]
