"""A training split of the traces, for policies tuned offline (``binned``).

Half of the scenario's trace queries (drawn with the scenario's seed, on a random stream of its
own) with the scenario's predictor applied and their true curves: what a team tuning a policy on
held-out recordings would have.  Arrivals are drawn from all queries, so some arriving queries
were in the training split (the embedded sets are small); this makes tuned policies slightly
optimistic, which the studies say where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.curves import accuracy_at
from traces.predictors import predict_tau
from traces.schema import TraceSet


@dataclass(frozen=True)
class TrainingSplit:
    traces: TraceSet
    rows: np.ndarray  # trace rows in the split
    tau_pred: np.ndarray  # the scenario's predictor on them

    def accuracy(self, budgets: np.ndarray) -> np.ndarray:
        """acc (rows x budgets) of the split's queries."""
        return accuracy_at(self.traces, self.rows[:, None], np.asarray(budgets)[None, :])


def training_split(ts: TraceSet, predictor: dict, seed: int, share: float = 0.5) -> TrainingSplit:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7A1]))
    n = ts.n_queries
    rows = np.sort(rng.choice(n, size=max(int(round(share * n)), 1), replace=False))
    return TrainingSplit(ts, rows, predict_tau(ts, rows, predictor, rng))
