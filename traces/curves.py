"""Accuracy-vs-tokens curves from recorded samples, vectorised over many queries and budgets.

Definitions (documented in the README's "Traces" section):

* **Accuracy at budget** b of query i (a hard cap, vLLM ``max_tokens=b``)::

      acc_i(b) = #{samples of i that are correct and need <= b tokens} / #samples of i

  and acc_i(b) = 0 for b <= 0 (an abandoned query is scored wrong).
* **Forced-answer accuracy** (budget forcing, ``semantics="forced-answer"``, sets with probes):
  a sample of L tokens stopped at b answers with its own final verdict if L <= b, else with
  the verdict of its last probe at a position <= b (none: wrong); acc_i(b) is the share of
  samples so answering correctly.  Without probes this is the hard cap.
* **True emergence threshold** tau_i: the fewest tokens with which any recorded sample of i
  was correct, i.e. the smallest budget with acc_i(b) > 0.  A query never solved in its
  recordings has tau_i = +inf: no budget helps it.
* **beta** (the surge's decay rate, global): the CLEAR utility is a shifted Gamma(2, beta); its
  variance 2 / beta**2 does not depend on the shift, so beta is estimated from the pooled
  within-query variance of correct-sample lengths (queries with two or more correct samples).
"""

from __future__ import annotations

import numpy as np

from sim.foundation.errors import UserError
from traces.schema import TraceSet

#: Budget semantics (scenario field ``traces.semantics``): what a run stopped at b answers.
SEMANTICS = ("hard-cap", "forced-answer")

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


def check_semantics(ts: TraceSet, semantics: str, where: str | None = None,
                    field: str = "traces.semantics") -> None:
    """One-line error for an unknown semantics or forced answers on a set without probes."""
    if semantics not in SEMANTICS:
        raise UserError(f"got {semantics!r}; allowed: {', '.join(SEMANTICS)}", where=where,
                        field=field)
    if semantics == "forced-answer" and not ts.has_probes:
        raise UserError(f"trace set '{ts.name}' has no probes, so it cannot give forced answers; "
                        "use a reasoning set with probes (clearsim traces list) or hard-cap",
                        where=where, field=field)


def _forced_keys(ts: TraceSet) -> tuple[np.ndarray, np.ndarray, int]:
    """Step changes of every sample's forced-answer verdict as a function of the budget.

    Sample s answers, at budget b, with probe k's verdict for p_k <= b < p_{k+1} (probes
    before its end L only) and with its own verdict for b >= L.  Each change is a key
    ``query * stride + b`` with a +1/-1 step; sorted keys and the running sum of steps give
    the number of correct samples of a query at any b by two binary searches.
    """
    cache = ts._cache
    if "forced_keys" not in cache:
        stride = int(max(ts.sample_tokens.max(initial=0), ts.probe_position.max(initial=0))) + 2
        ps = ts.probe_sample
        keep = ts.probe_position < ts.sample_tokens[ps]  # at or after L the run's verdict holds
        ps, pos = ps[keep], ts.probe_position[keep].astype(np.int64)
        val = ts.probe_correct[keep].astype(np.int64)
        # previous verdict of the same sample (0 before its first probe)
        prev = np.zeros_like(val)
        same = np.r_[False, ps[1:] == ps[:-1]]
        prev[1:] = np.where(same[1:], val[:-1], 0)
        n = len(ts.sample_tokens)
        last = np.zeros(n, dtype=np.int64)  # verdict of the last probe before L
        last[ps] = val  # later probes of a sample overwrite earlier ones (ps is sorted)
        q = ts.sample_query
        keys = np.concatenate([q[ps] * stride + pos, q * stride + ts.sample_tokens])
        steps = np.concatenate([val - prev, ts.sample_correct.astype(np.int64) - last])
        order = np.argsort(keys, kind="stable")
        keys, steps = keys[order], steps[order]
        cache["forced_keys"] = (keys, np.r_[0, np.cumsum(steps)], stride)
    return cache["forced_keys"]


def forced_probe(ts: TraceSet, sample: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Flat index of the probe that answers for ``sample`` stopped at ``budget`` tokens: its
    last probe at a position <= budget and before the sample's end; -1 where there is none."""
    sample, budget = np.broadcast_arrays(np.asarray(sample, dtype=np.int64), np.asarray(budget))
    if "probe_keys" not in ts._cache:
        stride = int(ts.probe_position.max(initial=0)) + 2
        ts._cache["probe_keys"] = (ts.probe_sample * stride + ts.probe_position, stride)
    keys, stride = ts._cache["probe_keys"]
    b = np.minimum(np.floor(budget), ts.sample_tokens[sample] - 1)
    b = np.clip(b, -1, stride - 1).astype(np.int64)
    k = np.searchsorted(keys, sample * stride + b, side="right") - 1
    return np.where((k >= ts.probe_offsets[sample]) & (b >= 0), k, -1)


def accuracy_at(ts: TraceSet, query: np.ndarray, budget: np.ndarray,
                semantics: str = "hard-cap") -> np.ndarray:
    """acc_query(budget), elementwise over broadcast arrays of query indices and budgets,
    under ``semantics`` (``hard-cap`` or ``forced-answer``, see the module docstring)."""
    query, budget = np.broadcast_arrays(np.asarray(query, dtype=np.int64), np.asarray(budget))
    if semantics != "hard-cap":
        check_semantics(ts, semantics, field="semantics")
        keys, csum, stride = _forced_keys(ts)
        b = np.clip(np.floor(budget), -1, stride - 1).astype(np.int64)
        base = query * stride
        hits = (csum[np.searchsorted(keys, base + b, side="right")]
                - csum[np.searchsorted(keys, base, side="left")])
        acc = hits / ts.samples_per_query[query]
        return np.where(budget > 0, acc, 0.0)
    keys, stride = _correct_keys(ts)
    b = np.clip(np.floor(budget), -1, stride - 1).astype(np.int64)
    base = query * stride
    hits = np.searchsorted(keys, base + b, side="right") - np.searchsorted(keys, base, side="left")
    acc = hits / ts.samples_per_query[query]
    return np.where(budget > 0, acc, 0.0)


def accuracy_grid(ts: TraceSet, budgets, semantics: str = "hard-cap") -> np.ndarray:
    """acc_i(b) for every query i (rows) and every budget b (columns)."""
    budgets = np.asarray(budgets, dtype=float)
    return accuracy_at(ts, np.arange(ts.n_queries)[:, None], budgets[None, :], semantics)


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
