"""Predictors of the emergence threshold tau: all a policy ever learns about a query's difficulty.

* ``oracle``: the true tau (``traces.curves.true_tau``), +inf for never-solved queries.
* ``noisy``: the true tau times ``exp(sigma * Z)``, Z standard normal (the paper's robustness
  axis).  A never-solved query has no true tau; a real predictor cannot know it is hopeless, so
  ``noisy`` starts from the length of its longest recorded sample instead (how long the model
  took, which is what a length predictor could learn; the recording cap for truncated samples)
  and applies the same noise.  So ``noisy`` does not know which queries are hopeless.

* ``prior``: the mean log tau per (dataset, level) of the training sets ``train`` (default the
  in-distribution GSM8K and MATH sets, as in the paper); see :mod:`traces.tau_models`.
* ``learned``: ridge regression on the features a server has before generation (dataset,
  level, subject, prompt tokens), trained on ``train``; see :mod:`traces.tau_models`.

Noise is drawn from the run's random stream once per arrival (for every kind, so the stream is
the same whatever the kind), and predictions are made once per arrival, so every policy of a
run sees the same predictions.  The truth the predictors aim at (and ``oracle`` returns) is
``tau_of(trace set)``: the empirical threshold by default, the fitted one when a scenario draws
outcomes from fitted curves; ``prior`` and ``learned`` are trained on the same definition.
"""

from __future__ import annotations

import numpy as np

from sim.foundation.spec import Field, non_negative
from traces.curves import true_tau
from traces.schema import TraceSet

def _train_sets(v) -> str | None:
    if not v or not all(isinstance(s, str) and s for s in v):
        return "expected a non-empty list of trace set names (see 'clearsim traces list')"
    return None


PREDICTOR_SPEC = {
    "kind": Field((str,), "oracle", "which predictor policies see",
                  choices=("oracle", "noisy", "prior", "learned")),
    "sigma": Field((float,), 0.0, "lognormal noise of 'noisy' (std of log tau, at most 20)",
                   check=non_negative, max=20.0),
    "train": Field((list,), None, "training trace sets of 'prior' and 'learned' (null = "
                   "gpt-4_gsm8k_t0.7_k6, qwen25-math-instruct_math100_t0.7_k8: in distribution)",
                   nullable=True, check=_train_sets),
    "ridge": Field((float,), 1.0, "L2 penalty of 'learned' (per training query)", check=non_negative),
}


def longest_sample(ts: TraceSet) -> np.ndarray:
    """Per query: tokens of its longest recorded sample (how hard a failed query looked)."""
    return np.maximum.reduceat(ts.sample_tokens, ts.offsets[:-1]).astype(float)


def train_predictor(spec: dict, tau_of=true_tau, where: str | None = None):
    """The trained ``prior`` or ``learned`` model of a predictor spec (training sets by name)."""
    from traces.registry import load_trace_set
    from traces.tau_models import DEFAULT_TRAIN, train

    names = spec.get("train") or list(DEFAULT_TRAIN)
    parts = [load_trace_set(n, where=where, field="predictor.train") for n in names]
    ts = TraceSet.concat("+".join(p.name for p in parts), parts)
    return train(spec["kind"], ts, tau_of(ts), ridge=spec.get("ridge", 1.0))


def predict_tau(ts: TraceSet, query: np.ndarray, spec: dict, rng: np.random.Generator,
                tau_of=true_tau, where: str | None = None) -> np.ndarray:
    """Predicted tau for each arrival (``query`` indexes ``ts``)."""
    tau = tau_of(ts)[query]
    z = rng.standard_normal(len(query))  # drawn for every kind: same stream, same arrivals
    kind = spec["kind"]
    if kind == "oracle":
        return tau
    if kind in ("prior", "learned"):
        return np.exp(train_predictor(spec, tau_of, where).predict_log(ts, query))
    base = np.where(np.isfinite(tau), tau, longest_sample(ts)[query])
    return base * np.exp(spec["sigma"] * z)
