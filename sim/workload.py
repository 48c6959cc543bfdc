"""The arrival stream of one run: when queries arrive, which query each is, and its hidden outcome.

A workload is drawn once per (scenario, seed) and replayed against every policy, so policies
compete on the same arrivals, the same hidden outcomes and the same predictions.  Independent
random streams (``numpy.random.SeedSequence.spawn``) feed the arrival times, the query choice,
the sample choice and the predictor's noise, so changing the rate does not change which queries
arrive, and the same seed always gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import QueryView
from sim.errors import UserError
from traces.curves import true_tau
from traces.predictors import predict_tau
from traces.schema import TraceSet


@dataclass(frozen=True, eq=False)
class Workload:
    traces: TraceSet
    arrival_s: np.ndarray  # float64, non-decreasing
    query: np.ndarray  # index into traces
    sample: np.ndarray  # flat sample index into traces: the hidden outcome
    tau_pred: np.ndarray  # what policies see

    @property
    def n(self) -> int:
        return len(self.arrival_s)

    @property
    def query_id(self) -> np.ndarray:
        return self.traces.query_id[self.query]

    @property
    def dataset(self) -> np.ndarray:
        return self.traces.dataset[self.query]

    @property
    def prompt_tokens(self) -> np.ndarray:
        return self.traces.prompt_tokens[self.query]

    @property
    def tokens_needed(self) -> np.ndarray:
        """Completion tokens the drawn sample needs (hidden from policies)."""
        return self.traces.sample_tokens[self.sample]

    @property
    def sample_correct(self) -> np.ndarray:
        return self.traces.sample_correct[self.sample]

    @property
    def tau_true(self) -> np.ndarray:
        return true_tau(self.traces)[self.query]

    def view(self, idx: np.ndarray) -> QueryView:
        """What a server knows about arrivals ``idx``: no outcome, no true threshold."""
        return QueryView(
            query_id=self.query_id[idx],
            dataset=self.dataset[idx],
            prompt_tokens=self.prompt_tokens[idx],
            arrival_s=self.arrival_s[idx],
            tau_pred=self.tau_pred[idx],
        )


def mix_weights(ts: TraceSet, mix: dict[str, float] | None, where: str | None = None) -> np.ndarray:
    """Per-query draw probabilities: dataset weight spread evenly over that dataset's queries.

    With no mix every query is equally likely (datasets weighted by their size).
    """
    if not mix:
        return np.full(ts.n_queries, 1.0 / ts.n_queries)
    known = ts.datasets()
    for name, w in mix.items():
        if name not in known:
            raise UserError(
                f"dataset '{name}' is not in the scenario's trace sets; available: "
                f"{', '.join(known)}",
                where=where,
                field=f"traces.mix.{name}",
            )
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise UserError(f"got {w!r}; expected a weight >= 0", where=where, field=f"traces.mix.{name}")
    total = float(sum(mix.values()))
    if total <= 0:
        raise UserError("weights sum to 0; give at least one positive weight", where=where, field="traces.mix")
    probs = np.zeros(ts.n_queries)
    for name, w in mix.items():
        rows = ts.dataset == name
        probs[rows] = (w / total) / rows.sum()
    return probs


def poisson_arrivals(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.exponential(1.0 / rate, n))


def build_workload(
    ts: TraceSet,
    *,
    n_queries: int,
    rate: float,
    mix: dict[str, float] | None,
    predictor: dict,
    seed: int,
    where: str | None = None,
) -> Workload:
    probs = mix_weights(ts, mix, where)
    s_arr, s_query, s_sample, s_pred = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    arrival = poisson_arrivals(rate, n_queries, s_arr)
    query = s_query.choice(ts.n_queries, size=n_queries, p=probs)
    counts = ts.samples_per_query[query]
    sample = ts.offsets[query] + np.minimum((s_sample.random(n_queries) * counts).astype(np.int64), counts - 1)
    tau_pred = predict_tau(ts, query, predictor, s_pred)
    return Workload(ts, arrival, query, sample, tau_pred)
