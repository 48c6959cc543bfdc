"""Step-time models: how long one engine iteration (one scheduler step) takes on the GPU.

Every model answers two questions behind one interface:

* ``step_s(prefill_tokens, decode_seqs, decode_ctx)``: the duration of a step that computes
  ``prefill_tokens`` prompt (or recompute) tokens and one token for each of ``decode_seqs``
  decoding sequences whose contexts add up to ``decode_ctx`` tokens.
* ``decode_stretch(n, ctx)``: ``(a, b)`` such that the ``s``-th (0-based) of a run of identical
  decode-only steps over ``n`` sequences starting at total context ``ctx`` lasts ``a + b * s``.
  This is what lets the engine jump over a stretch in closed form (the sum of ``j`` steps is
  ``j a + b j (j - 1) / 2``) instead of simulating each step.

Models:

* :class:`LinearStepModel`: ``c0 + c1 * prefill tokens + c2 * decode seqs + c3 * decode context``
  (BLIS "blackbox" form; ``c3`` adds the KV-read cost that grows with long reasoning outputs).
* :class:`TableStepModel`: a measured profile, step time interpolated linearly in the number of
  tokens the step computes (prefill tokens + decoding sequences), as operator profiles such as
  vidur's are indexed; flat beyond the table's ends.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.foundation.errors import UserError


@dataclass(frozen=True)
class LinearStepModel:
    """step_s = c0_s + c1_s * prefill_tokens + c2_s * decode_seqs + c3_s * decode_ctx."""

    c0_s: float
    c1_s: float
    c2_s: float
    c3_s: float = 0.0

    def step_s(self, prefill_tokens: int, decode_seqs: int, decode_ctx: int = 0) -> float:
        return self.c0_s + self.c1_s * prefill_tokens + self.c2_s * decode_seqs + self.c3_s * decode_ctx

    def decode_stretch(self, n: int, ctx: int) -> tuple[float, float]:
        # Each step every sequence's context grows by one token: + c3 * n per step.
        return self.c0_s + self.c2_s * n + self.c3_s * ctx, self.c3_s * n


@dataclass(frozen=True, eq=False)
class TableStepModel:
    """Step time interpolated from a profile: ``tokens`` computed in the step -> ``seconds``."""

    tokens: np.ndarray
    seconds: np.ndarray
    source: str = field(default="", compare=False)

    def __post_init__(self):
        t = np.asarray(self.tokens, dtype=float)
        s = np.asarray(self.seconds, dtype=float)
        if t.ndim != 1 or len(t) < 1 or len(t) != len(s) or (np.diff(t) <= 0).any() or (s <= 0).any():
            raise ValueError("a step table needs increasing token counts and positive times")
        object.__setattr__(self, "tokens", t)
        object.__setattr__(self, "seconds", s)

    def step_s(self, prefill_tokens: int, decode_seqs: int, decode_ctx: int = 0) -> float:
        return float(np.interp(prefill_tokens + decode_seqs, self.tokens, self.seconds))

    def decode_stretch(self, n: int, ctx: int) -> tuple[float, float]:
        return self.step_s(0, n), 0.0

    @classmethod
    def from_csv(cls, path: str | Path) -> TableStepModel:
        """A CSV with columns ``tokens`` and ``step_ms`` (one row per profiled batch size)."""
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise UserError(f"cannot read step table ({exc.__class__.__name__})", where=str(path)) from None
        try:
            rows.sort(key=lambda r: float(r["tokens"]))
            tokens = np.array([float(r["tokens"]) for r in rows])
            seconds = np.array([float(r["step_ms"]) for r in rows]) / 1000.0
            return cls(tokens, seconds, str(path))
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"expected a CSV with columns tokens, step_ms (increasing tokens, "
                            f"positive times): {exc}", where=str(path)) from None


def solve_steps(a: float, b: float, horizon: float) -> int:
    """Largest ``j >= 0`` with ``j a + b j (j - 1) / 2 <= horizon`` (steps that end in time)."""
    if horizon < a:
        return 0
    if horizon == float("inf"):
        return 1 << 62
    if b <= 0.0:
        j = int(horizon // a)
    else:
        h = a - 0.5 * b
        j = int((-h + (h * h + 2.0 * b * horizon) ** 0.5) / b)
    # Guard the floating-point edge either way.
    while j > 0 and j * a + b * j * (j - 1) * 0.5 > horizon:
        j -= 1
    while (j + 1) * a + b * (j + 1) * j * 0.5 <= horizon:
        j += 1
    return j


__all__ = ["LinearStepModel", "TableStepModel", "solve_steps"]
