"""What only the ``oracle`` bound may see: each query's true accuracy-vs-tokens curve.

The runner builds a :class:`TrueCurves` for policies that declare ``sees_true_curves`` (only
``oracle``) and leaves ``RunContext.true_curves`` None for every other policy, so no real policy
can peek.  A query's true curve is a step function that rises only at the lengths of its correct
recorded samples, so those lengths (plus 0, abandoning) are the only budgets worth considering:
the oracle's knapsack over them is exact, not a grid approximation.  When a scenario draws
outcomes from fitted curves (``traces.outcomes: fitted``), the truth is the fitted curve and the
options are a grid of ``GRID`` budgets from 0 to ``b_max``.
"""

from __future__ import annotations

import numpy as np

from traces.curves import accuracy_at
from traces.schema import TraceSet


GRID = 129


class TrueCurves:
    def __init__(self, ts: TraceSet, fitted=None):
        self.ts = ts
        self.fitted = fitted  # traces.fit.CurveFit under fitted outcomes, else None
        self._row = {q: i for i, q in enumerate(ts.query_id.tolist())}

    def rows(self, query_id: np.ndarray) -> np.ndarray:
        """Trace rows of the given query ids (ids are unique across a scenario's sets)."""
        return np.fromiter((self._row[q] for q in query_id.tolist()), dtype=np.int64,
                           count=len(query_id))

    def accuracy(self, query_id: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        if self.fitted is not None:
            return self.fitted.accuracy_at(self.rows(query_id), budgets)
        return accuracy_at(self.ts, self.rows(query_id), budgets)

    def options(self, query_id: np.ndarray, b_max: int) -> tuple[np.ndarray, np.ndarray]:
        """(costs, values), one row per query: 0 and each correct sample's length <= b_max
        (padded with 0), with the true accuracy at each."""
        ts = self.ts
        rows = self.rows(query_id)
        if self.fitted is not None:
            grid = np.unique(np.linspace(0, b_max, GRID).round().astype(np.int64))
            costs = np.broadcast_to(grid, (len(rows), len(grid)))
            return costs, self.fitted.accuracy_at(rows[:, None], costs)
        counts = ts.samples_per_query[rows]
        k = int(counts.max(initial=0))
        j = np.arange(k)[None, :]
        flat = ts.offsets[rows][:, None] + np.minimum(j, np.maximum(counts[:, None] - 1, 0))
        tok = ts.sample_tokens[flat]
        ok = (j < counts[:, None]) & ts.sample_correct[flat] & (tok <= b_max)
        costs = np.concatenate([np.zeros((len(rows), 1), dtype=np.int64),
                                np.where(ok, tok, 0)], axis=1)
        values = accuracy_at(ts, rows[:, None], costs)
        return costs, values
