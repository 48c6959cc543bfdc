"""Predictors of the emergence threshold tau: all a policy ever learns about a query's difficulty.

* ``oracle``: the true tau (``traces.curves.true_tau``), +inf for never-solved queries.
* ``noisy``: the true tau times ``exp(sigma * Z)``, Z standard normal (the paper's robustness
  axis).  A never-solved query has no true tau; a real predictor cannot know it is hopeless, so
  ``noisy`` starts from the length of its longest recorded sample instead (how long the model
  took, which is what a length predictor could learn; the recording cap for truncated samples)
  and applies the same noise.  So ``noisy`` does not know which queries are hopeless.

Noise is drawn from the run's random stream once per arrival, so every policy of a run sees the
same predictions.
"""

from __future__ import annotations

import numpy as np

from sim.spec import Field, non_negative
from traces.curves import true_tau
from traces.schema import TraceSet

PREDICTOR_SPEC = {
    "kind": Field((str,), "oracle", "which predictor policies see", choices=("oracle", "noisy")),
    "sigma": Field((float,), 0.0, "lognormal noise of 'noisy' (std of log tau)", check=non_negative),
}


def longest_sample(ts: TraceSet) -> np.ndarray:
    """Per query: tokens of its longest recorded sample (how hard a failed query looked)."""
    return np.maximum.reduceat(ts.sample_tokens, ts.offsets[:-1]).astype(float)


def predict_tau(ts: TraceSet, query: np.ndarray, spec: dict, rng: np.random.Generator) -> np.ndarray:
    """Predicted tau for each arrival (``query`` indexes ``ts``)."""
    tau = true_tau(ts)[query]
    z = rng.standard_normal(len(query))  # drawn for every kind: same stream, same arrivals
    if spec["kind"] == "oracle":
        return tau
    base = np.where(np.isfinite(tau), tau, longest_sample(ts)[query])
    return base * np.exp(spec["sigma"] * z)
