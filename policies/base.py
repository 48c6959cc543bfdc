"""The policy interface: what a policy sees, when it decides, and what it returns.

A policy is a small object with two things:

* ``timing``: *when* it decides. ``immediate`` (each query on arrival), ``window`` (every
  ``window_s`` seconds, over the queries that arrived in that window) or ``batch`` (every
  ``batch_size`` arrivals; ``None`` means the whole run, the paper's setting).  The simulator,
  not the policy, holds queries until their decision point, so waiting is counted as latency.
* ``allocate(view, budget_tokens)``: *how much* each query of a decision group may generate.
  ``view`` holds only what a server could know before generation (:class:`QueryView`: never
  the hidden outcome or the true threshold); ``budget_tokens`` is the group's share of the
  budget (target mean tokens per query times the group's size).  It returns an integer cap per
  query (0 = abandon) whose sum never exceeds the budget.

New policies subclass :class:`Policy`, declare their parameters in ``PARAMS`` (checked by
:mod:`sim.foundation.spec`) and register with :func:`register`, after which scenarios select them by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.foundation.spec import Field


@dataclass(frozen=True)
class Timing:
    kind: str  # "immediate" | "window" | "batch"
    window_s: float | None = None
    batch_size: int | None = None  # None with kind="batch": the whole run
    #: kind="window" only: also close the window at its ``every_k``-th arrival (whichever of
    #: the W-second boundary and the k-th arrival comes first); window_s None = every k only.
    every_k: int | None = None


@dataclass(frozen=True)
class QueryView:
    """What a server knows about a group of queries when it must decide their budgets."""

    query_id: np.ndarray
    dataset: np.ndarray
    prompt_tokens: np.ndarray
    arrival_s: np.ndarray
    tau_pred: np.ndarray  # the predictor's estimate of the emergence threshold (tokens)

    def __len__(self) -> int:
        return len(self.tau_pred)


@dataclass(frozen=True)
class Allocation:
    budgets: np.ndarray  # int64 caps, 0 = abandon
    shadow_price: float | None = None  # lambda / alpha for price-based policies


@dataclass(frozen=True)
class RunContext:
    """Run-level facts a policy may use to set itself up (never per-query outcomes)."""

    target_tokens_per_query: float
    fitted_beta: float
    n_queries: int
    #: Set when the scenario's budget is a token rate (``budget_utilisation``): tokens per
    #: second the engine may spend; decision groups then get ``token_rate`` x elapsed time.
    token_rate: float | None = None
    #: The true accuracy curves (:class:`TrueCurves`), given only to policies that declare
    #: ``sees_true_curves`` (the ``oracle`` bound); None for every other policy.
    true_curves: object | None = None
    #: A training split of the traces with the scenario's predictor applied
    #: (:class:`policies.training.TrainingSplit`), for policies declaring ``needs_training``.
    training: object | None = None


class Policy(ABC):
    name: ClassVar[str]
    doc: ClassVar[str]
    PARAMS: ClassVar[dict[str, Field]] = {}

    def __init__(self, params: dict, ctx: RunContext, label: str | None = None):
        self.params = params
        self.ctx = ctx
        self.label = label or self.name  # how results name it (scenarios may run one twice)

    @classmethod
    def check_params(cls, params: dict) -> str | None:
        """Checks across parameters (each one alone is checked by PARAMS); an error text or
        None.  Called when a scenario is validated."""
        return None

    @property
    @abstractmethod
    def timing(self) -> Timing: ...

    @abstractmethod
    def allocate(self, view: QueryView, budget_tokens: float) -> Allocation: ...

    def allocate_each(self, view: QueryView, budget_each: float) -> np.ndarray | None:
        """Caps for many queries each decided alone with ``budget_each`` tokens (immediate
        timing), in one call: the same caps :meth:`allocate` gives one query at a time, or
        None if the policy cannot do that (the runner then asks query by query)."""
        return None

    #: Immediate policies that decide a query from its predicted threshold and arrival time
    #: alone may define ``allocate_one(tau_pred: float, arrival_s: float, budget: float) ->
    #: (cap: int, shadow_price: float | None)``: what :meth:`allocate` gives a one-query view,
    #: without building the view and the arrays (the runner's per-arrival path of live
    #: decisions, :func:`sim.core.allocation.allocation_process`).  None: ask :meth:`allocate`.
    allocate_one = None

    #: Set True in policies that learn from completions (they then get ``on_finished`` calls).
    wants_feedback: ClassVar[bool] = False
    #: Only the ``oracle`` bound sets this: the runner then puts the true curves in its context.
    sees_true_curves: ClassVar[bool] = False
    #: Policies tuned on a training split of the traces (``binned``) set this.
    needs_training: ClassVar[bool] = False
    #: The early-exit family (:mod:`policies.early_exit`) gives its stopping rule here
    #: (an :class:`ExitRule`); the simulated server applies it to the probes of
    #: each request as it decodes.  None: requests run to their cap or their end.
    exit_rule = None

    def on_finished(self, budgets: np.ndarray, tokens_generated: np.ndarray, now: float) -> None:
        """Requests finished at ``now`` with these caps and generated lengths (what a server
        sees when a request ends: its length, and whether it hit the cap; never correctness)."""


@dataclass(frozen=True)
class ExitRule:
    """Stop after ``k`` consecutive agreeing probes (or, with ``certain``, ``k`` consecutive
    probes flagged certain).  Declared here, with the policy interface, because a policy gives
    it (:attr:`Policy.exit_rule`); :mod:`sim.core.early_exit` applies it while a request decodes."""

    k: int
    certain: bool = False


REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    REGISTRY[cls.name] = cls
    return cls
