"""Trainable tau predictors, ``prior`` and ``learned``, and their out-of-distribution evaluation.

Both see only what a server has before generation (dataset, level, subject, prompt tokens) and
predict log tau; they are trained on the *solved* queries of training sets (a never-solved query
has no threshold to learn from) with each training dataset weighted equally (the GSM8K set is
13x the MATH one; unweighted, "the average query" would be a GSM8K query).

* ``prior``: the mean of log tau per (dataset, level); an unseen pair falls back to the
  dataset's mean, then to the mean over all training datasets.  Constant within a cell.
* ``learned``: ridge regression of log tau on one-hot dataset, level and subject plus
  log(1 + prompt tokens), intercept unpenalised, numpy only (a closed-form solve of a ~20 x 20
  system: no scikit-learn needed).  A missing value (no level, no subject) is not a category
  of its own but the training average of its block (else "no level" would just mean "GSM8K",
  the only training set without levels); so is a category unseen in training (an
  out-of-distribution dataset).  The prediction then moves only with the features the model
  does know (prompt length, a known level or subject).

The paper's DeBERTa regressor reads the query text; clearsim never stores text, so these are
the feature-only predictors a server could run.  Evaluation (:func:`evaluate`) reports the mean
absolute error of log tau and Spearman's rank correlation over each test set's solved queries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from traces.curves import true_tau
from traces.schema import UNKNOWN_LEVEL, TraceSet

#: Default training split: the in-distribution sets, as in the paper (GSM8K and MATH).
DEFAULT_TRAIN = ("gpt-4_gsm8k_t0.7_k6", "qwen25-math-instruct_math100_t0.7_k8")
#: Default out-of-distribution test sets (Qwen2.5-Math-7B-Instruct, greedy).
DEFAULT_TEST = ("qwen2.5-math-7b-instruct_olympiadbench_greedy",
                "qwen2.5-math-7b-instruct_minerva_math_greedy",
                "qwen2.5-math-7b-instruct_gaokao2023en_greedy")


def _dataset_weights(dataset: np.ndarray) -> np.ndarray:
    """Each dataset's queries share weight 1 in total (then normalised to sum 1)."""
    names, inv, counts = np.unique(dataset.astype(str), return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w / w.sum()


def _training_rows(ts: TraceSet, tau: np.ndarray | None):
    tau = true_tau(ts) if tau is None else tau
    ok = np.isfinite(tau) & (tau > 0)
    return ok, np.log(tau[ok])


@dataclass
class PriorModel:
    """Mean log tau per (dataset, level), falling back to dataset, then global."""

    cells: dict = field(default_factory=dict)
    by_dataset: dict = field(default_factory=dict)
    overall: float = 0.0
    kind: str = "prior"

    @classmethod
    def train(cls, ts: TraceSet, tau: np.ndarray | None = None) -> "PriorModel":
        ok, y = _training_rows(ts, tau)
        ds = ts.dataset[ok].astype(str)
        lv = ts.level[ok]
        w = _dataset_weights(ds)
        m = cls(overall=float(np.average(y, weights=w)))
        for d in np.unique(ds):
            rows = ds == d
            m.by_dataset[d] = float(y[rows].mean())
            for level in np.unique(lv[rows]):
                r2 = rows & (lv == level)
                m.cells[(d, int(level))] = float(y[r2].mean())
        return m

    def predict_log(self, ts: TraceSet, query: np.ndarray | None = None) -> np.ndarray:
        query = np.arange(ts.n_queries) if query is None else query
        ds = ts.dataset[query].astype(str)
        lv = ts.level[query]
        uniq, inv = np.unique(np.stack([ds, lv.astype(str)]), axis=1, return_inverse=True)
        vals = np.array([
            self.cells.get((d, int(l)), self.by_dataset.get(d, self.overall)) for d, l in uniq.T
        ])
        return vals[np.ravel(inv)]


MISSING = "?"


def _features(ts: TraceSet, query: np.ndarray):
    ds = ts.dataset[query].astype(str)
    lv = np.where(ts.level[query] == UNKNOWN_LEVEL, MISSING, ts.level[query].astype(str))
    sj = np.array([MISSING if s is None else str(s) for s in ts.subject[query]], dtype=object)
    lp = np.log1p(ts.prompt_tokens[query].astype(float))
    return {"dataset": ds, "level": lv, "subject": sj}, lp


@dataclass
class LearnedModel:
    """Ridge regression of log tau on one-hot categories and log prompt tokens."""

    levels: dict = field(default_factory=dict)  # block -> list of category names
    shares: dict = field(default_factory=dict)  # block -> training share of each category
    coef: np.ndarray | None = None
    intercept: float = 0.0
    x_mean: np.ndarray | None = None
    ridge: float = 1.0
    kind: str = "learned"

    def _design(self, ts: TraceSet, query: np.ndarray) -> np.ndarray:
        cats, lp = _features(ts, query)
        cols = []
        for block, names in self.levels.items():
            vals = cats[block]
            onehot = (vals[:, None] == np.array(names, dtype=object)[None, :]).astype(float)
            unseen = onehot.sum(axis=1) == 0
            if unseen.any():  # missing or unseen: the training average of its block
                onehot[unseen] = self.shares[block]
            cols.append(onehot)
        cols.append(lp[:, None])
        return np.hstack(cols)

    @classmethod
    def train(cls, ts: TraceSet, tau: np.ndarray | None = None, ridge: float = 1.0) -> "LearnedModel":
        ok, y = _training_rows(ts, tau)
        query = np.flatnonzero(ok)
        cats, _ = _features(ts, query)
        w = _dataset_weights(cats["dataset"])
        m = cls(ridge=ridge)
        for block, vals in cats.items():
            names = sorted(set(vals.tolist()) - {MISSING})
            if not names:
                continue  # never stated in training: nothing to learn from this block
            known = vals != MISSING
            m.levels[block] = names
            m.shares[block] = np.array([w[vals == n].sum() for n in names]) / w[known].sum()
        X = m._design(ts, query)
        m.x_mean = w @ X
        y_mean = float(w @ y)
        Xc = X - m.x_mean
        # weighted ridge: minimise sum w (y - a - Xc b)^2 + ridge/N * |b|^2 (ridge per query)
        A = Xc.T @ (Xc * w[:, None]) + (ridge / len(y)) * np.eye(X.shape[1])
        m.coef = np.linalg.solve(A, Xc.T @ (w * (y - y_mean)))
        m.intercept = y_mean
        return m

    def predict_log(self, ts: TraceSet, query: np.ndarray | None = None) -> np.ndarray:
        query = np.arange(ts.n_queries) if query is None else query
        return self.intercept + (self._design(ts, query) - self.x_mean) @ self.coef


MODELS = {"prior": PriorModel, "learned": LearnedModel}


def train(kind: str, ts: TraceSet, tau: np.ndarray | None = None, ridge: float = 1.0):
    if kind == "learned":
        return LearnedModel.train(ts, tau, ridge=ridge)
    return PriorModel.train(ts, tau)


def evaluate(model, ts: TraceSet, tau: np.ndarray | None = None) -> dict:
    """MAE of log tau and Spearman rank correlation over the set's solved queries.

    Spearman is None when the predictions are constant over the set (no ranking at all).
    """
    tau = true_tau(ts) if tau is None else tau
    ok = np.isfinite(tau) & (tau > 0)
    q = np.flatnonzero(ok)
    pred = model.predict_log(ts, q)
    y = np.log(tau[ok])
    rho = None
    if len(q) > 1 and np.ptp(pred) > 1e-12:
        rho = float(spearmanr(pred, y).statistic)
    return {
        "n_solved": int(ok.sum()),
        "n_queries": int(ts.n_queries),
        "mae_log_tau": float(np.abs(pred - y).mean()) if len(q) else None,
        "bias_log_tau": float((pred - y).mean()) if len(q) else None,
        "spearman": rho,
    }
