"""Accuracy-vs-tokens curves from recorded samples, vectorised over many queries and budgets.

Definitions (documented in the README's "Traces" section):

* **Accuracy at budget** b of query i (a hard cap, vLLM ``max_tokens=b``)::

      acc_i(b) = #{samples of i that are correct and need <= b tokens} / #samples of i

  and acc_i(b) = 0 for b <= 0 (an abandoned query is scored wrong).
* **True emergence threshold** tau_i: the fewest tokens with which any recorded sample of i
  was correct, i.e. the smallest budget with acc_i(b) > 0.  A query never solved in its
  recordings has tau_i = +inf: no budget helps it.
* **beta** (the surge's decay rate, global): the CLEAR utility is a shifted Gamma(2, beta); its
  variance 2 / beta**2 does not depend on the shift, so beta is estimated from the pooled
  within-query variance of correct-sample lengths (queries with two or more correct samples).
"""

from __future__ import annotations

import numpy as np

from traces.schema import TraceSet

#: Used when a trace set has no query with two correct samples (greedy recordings):
#: the CLEAR paper's illustration value.
PAPER_BETA = 0.005


def _correct_keys(ts: TraceSet) -> tuple[np.ndarray, int]:
    """Sorted keys ``query * stride + tokens`` of every correct sample, and the stride."""
    cache = ts._cache
    if "correct_keys" not in cache:
        stride = int(ts.sample_tokens.max(initial=0)) + 2
        q = ts.sample_query[ts.sample_correct]
        keys = q * stride + ts.sample_tokens[ts.sample_correct]
        keys.sort()
        cache["correct_keys"] = (keys, stride)
    return cache["correct_keys"]


def accuracy_at(ts: TraceSet, query: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """acc_query(budget), elementwise over broadcast arrays of query indices and budgets."""
    query, budget = np.broadcast_arrays(np.asarray(query, dtype=np.int64), np.asarray(budget))
    keys, stride = _correct_keys(ts)
    b = np.clip(np.floor(budget), -1, stride - 1).astype(np.int64)
    base = query * stride
    hits = np.searchsorted(keys, base + b, side="right") - np.searchsorted(keys, base, side="left")
    acc = hits / ts.samples_per_query[query]
    return np.where(budget > 0, acc, 0.0)


def accuracy_grid(ts: TraceSet, budgets) -> np.ndarray:
    """acc_i(b) for every query i (rows) and every budget b (columns)."""
    budgets = np.asarray(budgets, dtype=float)
    return accuracy_at(ts, np.arange(ts.n_queries)[:, None], budgets[None, :])


def true_tau(ts: TraceSet) -> np.ndarray:
    """Fewest tokens of any correct sample per query; +inf for never-solved queries."""
    if "tau" not in ts._cache:
        tok = np.where(ts.sample_correct, ts.sample_tokens.astype(float), np.inf)
        ts._cache["tau"] = np.minimum.reduceat(tok, ts.offsets[:-1])
    return ts._cache["tau"]


def solve_rate(ts: TraceSet) -> np.ndarray:
    """Share of correct samples per query (the curve's plateau p_i)."""
    return np.add.reduceat(ts.sample_correct.astype(float), ts.offsets[:-1]) / ts.samples_per_query


def fit_beta(ts: TraceSet) -> float | None:
    """beta from the pooled within-query variance of correct lengths; None if not identifiable."""
    q = ts.sample_query[ts.sample_correct]
    x = ts.sample_tokens[ts.sample_correct].astype(float)
    n = np.bincount(q, minlength=ts.n_queries).astype(float)
    s1 = np.bincount(q, weights=x, minlength=ts.n_queries)
    s2 = np.bincount(q, weights=x * x, minlength=ts.n_queries)
    use = n >= 2
    if not use.any():
        return None
    ss = (s2[use] - s1[use] ** 2 / n[use]).sum()
    dof = (n[use] - 1).sum()
    var = ss / dof
    if var <= 0:
        return None
    return float(np.sqrt(2.0 / var))
