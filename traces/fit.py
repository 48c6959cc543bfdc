"""The paper's curve model fitted to every query: solve rate p_i, threshold tau_i, global beta.

CLEAR's utility is a shifted Gamma(2, beta) density; read as the distribution of a query's
*correct* completion lengths it gives the smooth accuracy curve (clear-method.md)::

    acc_i(b) = p_i * G(b - tau_i),   G(x) = 1 - (1 + beta x) exp(-beta x) for x > 0, else 0

* ``p_i``: the query's solve rate (share of correct samples).
* ``beta``: global, from the queries with two or more correct samples (only they say anything
  about spread; with none, as in greedy recordings, beta is not identifiable and the paper's
  0.005 is used unless given).  Two estimators:

  - ``mle`` (default): the profile likelihood, each query's shift at its MLE for that beta,
    maximised over log beta (bounded scalar search).  It fits the recorded curves best (on the
    MATH k=8 set the per-query curve error halves against ``moments``).  With a shift estimated
    per query it is biased upwards by roughly 1/(k-1) for k correct samples per query (+13% at
    k=8, checked by simulation in the tests).
  - ``moments``: :func:`traces.curves.fit_beta`, sqrt(2 / pooled within-query variance),
    unbiased for the variance whatever the shifts, but dominated by the few queries with a long
    tail of correct lengths, so it makes every curve too wide.  CLEAR's ``beta: fitted`` uses it.
* ``tau_i``: the maximum-likelihood shift given beta.  The log-likelihood of correct lengths
  x_j is sum log(x_j - tau) - beta (x_j - tau), maximised where sum 1/(x_j - tau) = n beta with
  tau < min x_j: one root, found by vectorised bisection.  With one correct sample it is
  x - 1/beta (the sample sits at the Gamma's mode).  Clipped at 0; +inf when never solved.

A per-query MLE of beta too would be degenerate (with one sample per query the likelihood grows
without bound as beta does), which is why beta comes from within-query spread only.

The fitted model also draws outcomes (``traces.outcomes: fitted`` in a scenario): correct with
probability p_i and then tau_i + Gamma(2, beta) tokens (rounded up), else one of the query's
recorded incorrect samples.  Smooth curves and unlimited distinct draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from traces.curves import PAPER_BETA, accuracy_grid, fit_beta, solve_rate
from traces.schema import TraceSet


@dataclass(frozen=True, eq=False)
class CurveFit:
    """Fitted curve parameters of every query of a trace set."""

    p: np.ndarray  # solve rate per query
    tau: np.ndarray  # fitted threshold (tokens), +inf when never solved
    beta: float
    beta_source: str  # "fitted (mle)" | "fitted (moments)" | "paper default" | "given"

    def accuracy_at(self, query, budget) -> np.ndarray:
        """Fitted acc_query(budget), elementwise over broadcast arrays."""
        query, budget = np.broadcast_arrays(np.asarray(query, dtype=np.int64),
                                            np.asarray(budget, dtype=float))
        return self.p[query] * gamma2_cdf(budget - self.tau[query], self.beta)

    def accuracy_grid(self, budgets) -> np.ndarray:
        budgets = np.asarray(budgets, dtype=float)
        return self.accuracy_at(np.arange(len(self.p))[:, None], budgets[None, :])


def gamma2_cdf(x, beta: float) -> np.ndarray:
    """CDF of Gamma(shape 2, rate beta) at x: the fitted S-curve's shape above its threshold
    (here), the score of CLEAR's adaptive beta and the curves greedy-marginal climbs
    (``policies``).  0 for x <= 0 and for x = nan (an infinite threshold minus an infinite
    budget), 1 for x = +inf."""
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        bx = beta * np.where(x > 0, x, 0.0)
        out = 1.0 - (1.0 + bx) * np.exp(-bx)
    return np.where(x > 0, np.where(np.isposinf(x), 1.0, out), 0.0)


def mle_tau(ts: TraceSet, beta: float, iterations: int = 60, clip: bool = True) -> np.ndarray:
    """Per-query MLE of the shift given beta (see the module docstring); inf if never solved."""
    q = ts.sample_query[ts.sample_correct]
    x = ts.sample_tokens[ts.sample_correct].astype(float)
    n = np.bincount(q, minlength=ts.n_queries).astype(float)
    solved = n > 0
    xmin = np.full(ts.n_queries, np.inf)
    np.minimum.at(xmin, q, x)
    xmax = np.zeros(ts.n_queries)
    np.maximum.at(xmax, q, x)
    # u = xmin - tau > 0 solves f(u) = sum 1/(x_j - xmin + u) - n beta = 0, f decreasing;
    # the root lies in [max(0, 1/beta - range), 1/beta].
    hi = np.full(ts.n_queries, 1.0 / beta)
    lo = np.maximum(0.0, hi - np.where(solved, xmax - xmin, 0.0))
    d = x - xmin[q]
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        f = np.bincount(q, weights=1.0 / (d + mid[q]), minlength=ts.n_queries) - n * beta
        pos = f > 0  # root is above mid
        lo = np.where(pos, mid, lo)
        hi = np.where(pos, hi, mid)
    tau = xmin - 0.5 * (lo + hi)
    if clip:
        tau = np.maximum(tau, 0.0)
    return np.where(solved, tau, np.inf)


def fit_beta_mle(ts: TraceSet) -> float | None:
    """Profile maximum-likelihood beta over queries with >= 2 correct samples; None if none."""
    q = ts.sample_query[ts.sample_correct]
    x = ts.sample_tokens[ts.sample_correct].astype(float)
    n = np.bincount(q, minlength=ts.n_queries)
    use = (n >= 2)[q]
    if not use.any() or np.ptp(x[use]) == 0:
        return None
    sub = ts.subset(n >= 2)
    xq = sub.sample_query[sub.sample_correct]
    xs = sub.sample_tokens[sub.sample_correct].astype(float)

    def nll(log_beta: float) -> float:
        beta = float(np.exp(log_beta))
        d = np.maximum(xs - mle_tau(sub, beta, clip=False)[xq], 1e-12)
        return -float(np.sum(np.log(d) - beta * d) + 2.0 * log_beta * len(xs))

    res = minimize_scalar(nll, bounds=(np.log(1e-5), np.log(10.0)), method="bounded",
                          options={"xatol": 1e-5})
    return float(np.exp(res.x))


BETA_METHODS = ("mle", "moments")


def fit_curves(ts: TraceSet, beta: float | None = None, method: str = "mle") -> CurveFit:
    """Fit p_i, tau_i and beta (given, else estimated by ``method``, else the paper's 0.005)."""
    key = ("curve_fit", beta, method)
    if key in ts._cache:
        return ts._cache[key]
    if beta is not None:
        b, src = float(beta), "given"
    else:
        est = fit_beta_mle(ts) if method == "mle" else fit_beta(ts)
        b, src = (est, f"fitted ({method})") if est else (PAPER_BETA, "paper default")
    fit = CurveFit(p=solve_rate(ts), tau=mle_tau(ts, b), beta=b, beta_source=src)
    ts._cache[key] = fit
    return fit


def fit_error(ts: TraceSet, fit: CurveFit, budgets) -> dict:
    """How far the fitted curves are from the empirical ones on a budget grid.

    ``per_query_mae``: mean |fitted - empirical| over queries, per budget (what a single
    query's outcome sees); ``mean_curve_error``: fitted minus empirical *mean* accuracy per
    budget (what a run's accuracy sees); ``mae``: the per-query error averaged over the grid.
    """
    emp = accuracy_grid(ts, budgets)
    fitted = fit.accuracy_grid(budgets)
    per_query = np.abs(fitted - emp).mean(axis=0)
    return {
        "budgets": [float(b) for b in budgets],
        "per_query_mae": per_query.tolist(),
        "mean_curve_error": (fitted.mean(axis=0) - emp.mean(axis=0)).tolist(),
        "mae": float(per_query.mean()),
    }


def incorrect_index(ts: TraceSet) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of incorrect samples grouped by query (CSR: offsets, indices)."""
    if "incorrect_index" not in ts._cache:
        idx = np.flatnonzero(~ts.sample_correct)  # already in query order
        counts = np.bincount(ts.sample_query[idx], minlength=ts.n_queries)
        offs = np.zeros(ts.n_queries + 1, dtype=np.int64)
        np.cumsum(counts, out=offs[1:])
        ts._cache["incorrect_index"] = (offs, idx)
    return ts._cache["incorrect_index"]


def draw_outcomes(ts: TraceSet, fit: CurveFit, query: np.ndarray, rng: np.random.Generator):
    """Hidden outcomes from the fitted model: (tokens needed, correct, recorded sample or -1).

    Correct with probability p_i, then ceil(tau_i + Gamma(2, beta)) tokens, so that
    P(correct and tokens <= b) = p_i G(b - tau_i) exactly for whole-token budgets b.  An
    incorrect draw replays one of the query's recorded incorrect samples (its length, and its
    truncation at the recording cap).  Three uniform/gamma draws per arrival, vectorised.
    """
    n = len(query)
    u_correct = rng.random(n)
    g = rng.gamma(2.0, 1.0 / fit.beta, n)
    u_pick = rng.random(n)
    correct = u_correct < fit.p[query]
    tau = np.where(np.isfinite(fit.tau[query]), fit.tau[query], 0.0)
    tokens_c = np.maximum(np.ceil(tau + g), 1).astype(np.int64)
    offs, idx = incorrect_index(ts)
    cnt = offs[query + 1] - offs[query]
    pick = np.minimum((u_pick * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
    has = cnt > 0
    sample = np.full(n, -1, dtype=np.int64)
    sample[has] = idx[offs[query[has]] + pick[has]]
    # a query with p_i = 1 has no incorrect sample and u_correct < 1 always draws correct
    correct |= ~has
    tokens = np.where(correct, tokens_c, ts.sample_tokens[np.maximum(sample, 0)])
    sample = np.where(correct, -1, sample)
    return tokens, correct, sample
