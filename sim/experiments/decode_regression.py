"""Stage 1 of ``clearsim calibrate``: a per-request regression of decode times on the step model.

In a vLLM-style engine the step that computes a request's last prompt chunk also produces its
first token, and every later step produces one more, so request ``i``'s decode time ``y_i =
last_token_ts - first_token_ts`` spans exactly ``out_i - 1`` engine steps (without
preemption).  Summing the linear step model ``c0 + c1 * prefill tokens + c2 * decoding
sequences`` over those steps gives

    y_i = c0 * (out_i - 1) + c1 * P_i + c2 * D_i

* ``P_i``: prompt tokens prefilled in the window ``(first_i, last_i]``.  Approximation: a
  request's whole prompt is counted in the step that gives its first token (a chunked prefill
  that started before the window is counted in full, recomputation after a preemption not at
  all), so ``P_i`` is the summed input tokens of the other requests whose first token falls in
  the window.
* ``D_i``: decoding-sequence-steps in the window: ``i``'s own ``out_i - 1`` plus, for every
  other request ``j``, the tokens ``j`` generated inside ``i``'s window, approximated by ``j``'s
  uniform rate ``(out_j - 1) / (last_j - first_j)`` times the overlap of ``[first_j, last_j]``
  with ``[first_i, last_i]``.

Only differences of a request's own timestamps enter ``y``, and only comparisons of timestamps
enter the design, so a constant latency added to every timestamp (an HTTP client's view of the
stream, an API server's per-request overhead) cancels exactly.

Data-parallel replicas (``replicas = R > 1``): the recording does not say which replica served a
request, so each other request is assumed to be on ``i``'s replica with probability ``1 / R``
(requests spread evenly, independently of each other): the other requests' terms of ``P_i`` and
``D_i`` are scaled by ``1 / R``; ``i``'s own steps are not.

The design is computed in O(n log n): ``D`` from the cumulative integral ``F`` of the
piecewise-constant sum of all requests' rates over the sorted breakpoints (``F(last_i) -
F(first_i)`` minus ``i``'s own ``out_i - 1``), ``P`` from the sorted first-token times and
prefix sums of their prompts.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

#: Fewer usable requests than this: no fit (the caller falls back).
MIN_REQUESTS = 10
#: A request whose TPOT is below this fraction of the run's median TPOT is not used: its
#: tokens reached the client in a burst (seen in the 4-layer CPU recordings: 4-10 requests per
#: run with a TPOT of 0.1-1 ms against a median of 6.6-10.8 ms), so its window says nothing
#: about the steps and its "rate" would swamp the others' D.  No GPU or 8-layer CPU run has a
#: request below 0.41 of its median.
MIN_TPOT_RATIO = 0.25


def usable(first, last, output, min_tpot_ratio: float = MIN_TPOT_RATIO) -> np.ndarray:
    """Requests the regression uses: output >= 2 tokens, finite timestamps, last > first, and a
    TPOT of at least ``min_tpot_ratio`` times the median TPOT of those."""
    ok = np.isfinite(first) & np.isfinite(last) & (output >= 2) & (last > first)
    if min_tpot_ratio > 0 and ok.any():
        tpot = np.where(ok, (last - first) / np.maximum(output - 1, 1), np.nan)
        ok &= tpot >= min_tpot_ratio * np.nanmedian(tpot)
    return ok


def decode_design(first, last, prompt, output, replicas: int = 1,
                  min_tpot_ratio: float = MIN_TPOT_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` with one row per :func:`usable` request, in input order: columns ``out - 1``,
    ``P``, ``D`` (see the module docstring), ``y = last - first`` seconds.

    All requests with a first token count as others' prefill (also those with one output token
    or a burst-delivered stream); only usable ones count as others' decoding sequences."""
    first = np.asarray(first, dtype=float)
    last = np.asarray(last, dtype=float)
    prompt = np.asarray(prompt, dtype=float)
    output = np.asarray(output, dtype=float)
    if not (first.shape == last.shape == prompt.shape == output.shape) or first.ndim != 1:
        raise ValueError("first, last, prompt and output must be 1-d arrays of one length")
    if replicas < 1:
        raise ValueError("replicas must be >= 1")
    use = usable(first, last, output, min_tpot_ratio)
    a, b = first[use], last[use]
    steps = output[use] - 1.0
    y = b - a

    # D: F(t) = integral of sum_j rate_j 1[a_j <= s < b_j] ds, piecewise linear with its
    # breakpoints at every a_j and b_j.
    rate = steps / y
    pts = np.concatenate([a, b])
    dr = np.concatenate([rate, -rate])
    order = np.argsort(pts, kind="stable")
    t = pts[order]
    r_after = np.cumsum(dr[order])  # total rate right after each breakpoint
    # F at each sorted breakpoint: sum of rate * length of the preceding pieces.
    f = np.concatenate([[0.0], np.cumsum(r_after[:-1] * np.diff(t))]) if len(t) else t

    def F(x):
        k = np.searchsorted(t, x, side="right") - 1  # last breakpoint <= x (x is one of them)
        return f[k] + r_after[k] * (x - t[k])

    others_d = (F(b) - F(a)) - steps if len(a) else a
    others_d = np.maximum(others_d, 0.0)  # rounding only: the integral of the others is >= 0

    # P: prompts of the (other) requests whose first token is in (a_i, b_i].
    has_first = np.isfinite(first)
    fo = np.argsort(first[has_first], kind="stable")
    ft = first[has_first][fo]
    cum = np.concatenate([[0.0], np.cumsum(prompt[has_first][fo])])
    p = cum[np.searchsorted(ft, b, side="right")] - cum[np.searchsorted(ft, a, side="right")]

    X = np.column_stack([steps, p / replicas, steps + others_d / replicas])
    return X, y


def decode_fit(first, last, prompt, output, replicas: int = 1,
               weight: str = "seconds") -> np.ndarray | None:
    """Non-negative ``(c0, c1, c2)`` seconds of the regression on one run, or None with fewer
    than :data:`MIN_REQUESTS` usable requests (the caller falls back to another fit)."""
    X, y = decode_design(first, last, prompt, output, replicas)
    return fit_design([(X, y)], weight)


def fit_design(designs: list[tuple[np.ndarray, np.ndarray]], weight: str = "seconds") -> np.ndarray | None:
    """NNLS over stacked ``(X, y)`` designs (several runs fitted jointly); None when any has
    fewer than :data:`MIN_REQUESTS` rows.

    ``weight="seconds"`` (the default) fits the decode times as they are: the errors of a row
    are mostly absolute (timestamp jitter at both ends of the window, a few steps misplaced by
    the approximations of ``P`` and ``D``), not proportional to its length, so ordinary least
    squares in seconds is the right weighting, and a short window with a distorted end does not
    pull the fit.  ``"relative"`` divides each row by ``y_i`` (every request weighs by its
    relative error); on the recorded runs it is 1 check in 16 worse out of sample and, without
    the :data:`MIN_TPOT_RATIO` filter, the burst-delivered requests drive its fixed cost to 0
    (docs/validation.md, section 1b)."""
    if not designs or any(len(y) < MIN_REQUESTS for _, y in designs):
        return None
    X = np.vstack([d[0] for d in designs])
    y = np.concatenate([d[1] for d in designs])
    if weight == "relative":
        X, y = X / y[:, None], np.ones_like(y)
    elif weight != "seconds":
        raise ValueError(f"unknown weight {weight!r}")
    coef, _ = nnls(X, y)
    return coef


__all__ = ["MIN_REQUESTS", "MIN_TPOT_RATIO", "decode_design", "decode_fit", "fit_design", "usable"]
