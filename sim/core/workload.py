"""The arrival stream of one run: when queries arrive, which query each is, and its hidden outcome.

A workload is drawn once per (scenario, seed) and replayed against every policy, so policies
compete on the same arrivals, the same hidden outcomes and the same predictions.  Independent
random streams (``numpy.random.SeedSequence.spawn``) feed the arrival times, the query choice,
the sample choice and the predictor's noise, so changing the rate does not change which queries
arrive, and the same seed always gives the same bytes.

Which queries arrive: by dataset weights (``traces.mix``), or as a difficulty stream with exact
pool proportions (``traces.stream`` / ``traces.pools``, see :mod:`traces.pools`).  The hidden
outcome: a recorded sample (``traces.outcomes: empirical``) or a draw from the query's fitted
curve (``fitted``, see :mod:`traces.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.base import QueryView
from sim.core.arrivals import make_arrivals, poisson
from sim.foundation.errors import UserError
from traces.curves import accuracy_at, check_semantics, forced_probe, true_tau
from traces.fit import CurveFit, draw_outcomes, fit_curves
from traces.pools import STREAMS, check_pool_weights, draw_stream, edges_for, pool_of
from traces.predictors import predict_tau
from traces.schema import TraceSet


@dataclass(frozen=True, eq=False)
class Workload:
    traces: TraceSet
    arrival_s: np.ndarray  # float64, non-decreasing
    query: np.ndarray  # index into traces
    sample: np.ndarray  # flat sample index into traces: the hidden outcome (-1: a fitted draw)
    tau_pred: np.ndarray  # what policies see
    #: Set under ``traces.outcomes: fitted``: the curves the outcomes are drawn from, and the
    #: drawn outcomes (tokens needed, correct) themselves.
    curves: CurveFit | None = None
    tokens: np.ndarray | None = None
    correct: np.ndarray | None = None
    #: Prompt lengths recorded with a replayed arrival trace (``arrivals.trace_prompts``).
    prompt: np.ndarray | None = None
    #: ``traces.semantics``: what a run stopped at its cap answers (see traces.curves).
    semantics: str = "hard-cap"

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
        if self.prompt is not None:
            return self.prompt
        return self.traces.prompt_tokens[self.query]

    @property
    def tokens_needed(self) -> np.ndarray:
        """Completion tokens the drawn sample needs (hidden from policies)."""
        return self.needed_of(slice(None))

    @property
    def sample_correct(self) -> np.ndarray:
        return self.correct_of(slice(None))

    def needed_of(self, idx: np.ndarray | slice) -> np.ndarray:
        """``tokens_needed[idx]``, indexing the group first: O(group), not O(run), per decision."""
        if self.tokens is not None:
            return self.tokens[idx]
        return self.traces.sample_tokens[self.sample[idx]]

    def correct_of(self, idx: np.ndarray | slice) -> np.ndarray:
        """``sample_correct[idx]``, indexing the group first."""
        if self.correct is not None:
            return self.correct[idx]
        return self.traces.sample_correct[self.sample[idx]]

    @property
    def tau_true(self) -> np.ndarray:
        if self.curves is not None:
            return self.curves.tau[self.query]
        return true_tau(self.traces)[self.query]

    def expected_accuracy(self, budget: np.ndarray) -> np.ndarray:
        """Each arrival's true curve at its budget (the fitted curve under fitted outcomes)."""
        if self.curves is not None:
            return self.curves.accuracy_at(self.query, budget)
        return accuracy_at(self.traces, self.query, budget, self.semantics)

    def outcome(self, budget: np.ndarray, idx: np.ndarray | slice = slice(None)
                ) -> tuple[np.ndarray, np.ndarray]:
        """Arrivals ``idx`` at their caps ``budget``: is the answer correct, and how many extra
        tokens the forced answer takes (hidden from policies).

        hard-cap: correct iff the sample is correct and needs <= budget tokens; no extra.
        forced-answer: a sample that does not finish answers with its last probe at or below
        the cap (its verdict, plus that probe's answer tokens); none: wrong, no extra tokens.
        """
        budget = np.asarray(budget)
        needed = self.needed_of(idx)
        done = needed <= budget
        correct = self.correct_of(idx)
        if self.semantics == "hard-cap":
            return correct & done & (budget > 0), np.zeros(len(needed), dtype=np.int64)
        k = forced_probe(self.traces, self.sample[idx], budget)
        cut = ~done & (k >= 0) & (budget > 0)
        kk = np.maximum(k, 0)
        correct = np.where(done, correct, cut & self.traces.probe_correct[kk]) & (budget > 0)
        return correct, np.where(cut, self.traces.probe_out_tokens[kk], 0).astype(np.int64)

    def generated_tokens(self, idx: np.ndarray, caps: np.ndarray) -> np.ndarray:
        """Tokens funded arrivals ``idx`` generate under ``caps``: min(cap, needed), plus the
        forced answer's tokens under forced-answer, at least 1."""
        extra = self.outcome(caps, idx)[1]
        return np.maximum(np.minimum(caps, self.needed_of(idx)) + extra, 1)

    def view(self, idx: np.ndarray) -> QueryView:
        """What a server knows about arrivals ``idx``: no outcome, no true threshold."""
        q = self.query[idx]  # index the group first: O(group), not O(run), per decision
        return QueryView(
            query_id=self.traces.query_id[q],
            dataset=self.traces.dataset[q],
            prompt_tokens=self.prompt[idx] if self.prompt is not None else self.traces.prompt_tokens[q],
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


def build_workload(
    ts: TraceSet,
    *,
    n_queries: int,
    rate: float,
    mix: dict[str, float] | None,
    predictor: dict,
    seed: int,
    where: str | None = None,
    spec: dict | None = None,
    arrivals: dict | None = None,
) -> Workload:
    """Draw a run's arrivals, queries, hidden outcomes and predictions.

    ``spec`` is the resolved ``traces`` section of the scenario (``stream``, ``pools``,
    ``pool_edges``, ``outcomes``); None means dataset mix and recorded samples.
    """
    spec = spec or {}
    semantics = spec.get("semantics", "hard-cap")
    check_semantics(ts, semantics, where)
    if semantics != "hard-cap" and spec.get("outcomes", "empirical") == "fitted":
        raise UserError("forced answers come from recorded probes; fitted outcomes have none: "
                        "use traces.outcomes: empirical", where=where, field="traces.semantics")
    probs = mix_weights(ts, mix, where)
    s_arr, s_query, s_sample, s_pred = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    curves = fit_curves(ts) if spec.get("outcomes", "empirical") == "fitted" else None
    if curves is None:
        tau_of = true_tau
    else:
        # the run's own curves; training sets of a predictor fitted with the same beta
        tau_of = lambda t: curves.tau if t is ts else fit_curves(t, curves.beta).tau  # noqa: E731
    prompt = None
    if arrivals is None:  # ``arrivals``: the scenario's resolved section (sim.core.arrivals)
        arrival = poisson(rate, n_queries, s_arr)
    else:
        made = make_arrivals(arrivals, n_queries, s_arr, where)
        arrival, prompt = made.arrival_s, made.prompt_tokens
    weights = stream_weights(spec, where)
    if weights is None:
        query = s_query.choice(ts.n_queries, size=n_queries, p=probs)
    else:
        pool = pool_of(tau_of(ts), edges_for(spec.get("pool_edges"), ts.meta, where))
        query = draw_stream(pool, n_queries, weights, s_query, within=probs, where=where)
    tokens = correct = None
    if curves is None:
        counts = ts.samples_per_query[query]
        sample = ts.offsets[query] + np.minimum((s_sample.random(n_queries) * counts).astype(np.int64), counts - 1)
    else:
        tokens, correct, sample = draw_outcomes(ts, curves, query, s_sample)
    tau_pred = predict_tau(ts, query, predictor, s_pred, tau_of=tau_of, where=where)
    return Workload(ts, arrival, query, sample, tau_pred, curves, tokens, correct, prompt,
                    semantics)


def stream_weights(spec: dict, where: str | None = None) -> dict[str, float] | None:
    """Pool proportions of a ``traces`` section (``stream`` name or ``pools`` mapping), or None."""
    stream, pools = spec.get("stream"), spec.get("pools")
    if stream is not None and pools is not None:
        raise UserError("give either traces.stream or traces.pools, not both", where=where,
                        field="traces.pools")
    if stream is not None:
        return STREAMS[stream]
    if pools is not None:
        return check_pool_weights(pools, where, "traces.pools")
    return None
