"""Arrival processes: when queries arrive (and, when replaying a real trace, their prompt lengths).

``arrivals.process`` selects one:

* ``poisson``: exponential gaps at ``rate`` per second.
* ``gamma``: Gamma-distributed gaps with shape ``burstiness`` and mean ``1/rate``, exactly as
  ``vllm bench serve --burstiness`` draws them (``theta = 1 / (rate * burstiness)``): 1 is
  Poisson, below 1 burstier (CV^2 = 1/burstiness), above 1 more regular.
* ``piecewise``: a Poisson process whose rate follows ``schedule``, a list of
  ``[start_s, rate]`` steps (repeated every ``period_s`` when set; otherwise the last rate holds).
* ``daily``: a Poisson process with a sinusoidal day profile, mean ``rate``, relative
  ``amplitude``, cycle ``period_s`` (86400 s) and peak at ``peak_s``.
* ``replay``: the arrival times of a real trace (``trace``: one of the embedded traces
  ``azure-conv``, ``azure-code``, ``mooncake-conversation`` (see :mod:`sim.core.arrival_data`), or a
  path to a CSV with a ``TIMESTAMP`` column like the Azure LLM inference traces 2023, or a JSONL
  with a millisecond ``timestamp`` like Mooncake's), shifted to start at 0 and multiplied by ``time_scale`` (0.5 = twice as fast);
  with ``rate`` set the trace is instead rescaled to that mean rate.  ``trace_prompts: true``
  uses the trace's recorded input lengths as prompt tokens.  A trace shorter than
  ``queries`` is repeated end to end.

Time-varying rates use the time-rescaling theorem: unit-rate Poisson points are mapped through
the inverse of the cumulative intensity, so one random stream gives every profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
import warnings

import numpy as np
import pandas as pd

from sim.core.arrival_data import SOURCES, data_dir, read_source
from sim.foundation.errors import UserError

PROCESSES = ("poisson", "gamma", "piecewise", "daily", "replay")

#: Short names of the real traces embedded in the package (``sim/core/arrival_data``).
TRACE_ALIASES = tuple(SOURCES)


@dataclass(frozen=True)
class Arrivals:
    arrival_s: np.ndarray  # float64, non-decreasing, from 0
    prompt_tokens: np.ndarray | None = None  # recorded input lengths (replay, trace_prompts)


def poisson(rate: float, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.exponential(1.0 / rate, n))


def gamma(rate: float, burstiness: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """vLLM bench's gaps: Gamma(shape=burstiness, scale=1/(rate*burstiness)), mean 1/rate."""
    return np.cumsum(rng.gamma(burstiness, 1.0 / (rate * burstiness), n))


def _invert(cum_t: np.ndarray, cum_l: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Times at which the cumulative intensity (piecewise linear through the knots) reaches
    ``units``; beyond the last knot the last slope continues."""
    out = np.interp(units, cum_l, cum_t)
    past = units > cum_l[-1]
    if past.any():
        slope = (cum_l[-1] - cum_l[-2]) / (cum_t[-1] - cum_t[-2])
        out[past] = cum_t[-1] + (units[past] - cum_l[-1]) / slope
    return out


def piecewise(schedule: list, period_s: float | None, n: int, rng: np.random.Generator) -> np.ndarray:
    starts = np.array([float(s) for s, _ in schedule])
    rates = np.array([float(r) for _, r in schedule])
    units = np.cumsum(rng.exponential(1.0, n))
    if period_s is None:
        # Knots at each start plus one beyond, where the last rate carries on.
        t = np.append(starts, starts[-1] + 1.0)
        lam = np.concatenate(([0.0], np.cumsum(rates[:-1] * np.diff(starts)), [0.0]))
        lam[-1] = lam[-2] + rates[-1]
        return _invert(t, lam, units)
    ends = np.append(starts[1:], period_s)
    per_cycle = float(np.sum(rates * (ends - starts)))
    cycles = np.floor(units / per_cycle)
    rest = units - cycles * per_cycle
    t = np.append(starts, period_s)
    lam = np.concatenate(([0.0], np.cumsum(rates * (ends - starts))))
    return cycles * period_s + np.interp(rest, lam, t)


def daily(rate: float, amplitude: float, period_s: float, peak_s: float, n: int,
          rng: np.random.Generator) -> np.ndarray:
    """rate(t) = rate (1 + amplitude cos(2 pi (t - peak_s) / period_s)), by rescaling."""
    units = np.cumsum(rng.exponential(1.0, n))
    grid = np.linspace(0.0, period_s, 4097)
    lam = rate * (grid + amplitude * period_s / (2 * np.pi)
                  * (np.sin(2 * np.pi * (grid - peak_s) / period_s) - np.sin(-2 * np.pi * peak_s / period_s)))
    per_cycle = lam[-1]
    cycles = np.floor(units / per_cycle)
    return cycles * period_s + np.interp(units - cycles * per_cycle, lam, grid)


def resolve_trace(name: str, where: str | None = None) -> Path:
    if name in TRACE_ALIASES:
        path = data_dir() / f"{name}.parquet"
    else:
        path = Path(name)
        if not path.is_absolute() and where and not path.exists():
            path = Path(where).parent / path
    if not path.is_file():
        raise UserError(f"arrival trace not found: {name!r}; give a CSV/JSONL path or one of "
                        f"{', '.join(TRACE_ALIASES)} (embedded)",
                        where=where, field="arrivals.trace")
    return path


@lru_cache(maxsize=8)
def read_trace(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(arrival seconds from 0, input tokens) of an Azure-style CSV or Mooncake-style JSONL."""
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # NaN cast to int: a bad row
            df = pd.read_parquet(p) if p.suffix == ".parquet" else read_source(p)
        t = pd.to_numeric(df["arrival_s"], errors="raise").to_numpy(dtype=float)
        lengths = pd.to_numeric(df["input_tokens"], errors="raise").to_numpy(dtype=float)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError,
            RuntimeWarning) as exc:
        raise UserError(f"cannot read arrival trace ({exc.__class__.__name__}: {str(exc)[:80]}); expected an "
                        "Azure-style CSV (TIMESTAMP, ContextTokens) or a JSONL with timestamp (ms) "
                        "and input_length", where=str(p)) from None
    for col, arr in (("timestamp", t), ("input length", lengths)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            raise UserError(f"row {int(bad[0]) + 1}: {arr[bad[0]]!r} is not a finite number >= 0 "
                            f"({bad.size} such rows)", where=str(p), field=col)
    if np.any(np.abs(t) > 1e12) or np.any(lengths > 1e9):
        raise UserError("timestamps beyond 1e12 s or input lengths beyond 1e9 tokens",
                        where=str(p))
    tokens = lengths.astype(np.int64)
    order = np.argsort(t, kind="stable")
    t, tokens = t[order], tokens[order]
    if len(t) < 2 or t[-1] <= t[0]:
        raise UserError("an arrival trace needs at least two distinct timestamps", where=str(p))
    return t - t[0], np.maximum(tokens, 1)


def replay(path: Path, n: int, *, time_scale: float, rate: float | None) -> tuple[np.ndarray, np.ndarray]:
    t, tokens = read_trace(str(path))
    span = t[-1]
    # A mean gap's worth of space between repetitions keeps the tiled trace's rate.
    cycle = span * len(t) / (len(t) - 1)
    idx = np.arange(n)
    times = (idx // len(t)) * cycle + t[idx % len(t)]
    scale = time_scale if rate is None else (len(t) / cycle) / rate
    return times * scale, tokens[idx % len(t)]


def _schedule_ok(v) -> str | None:
    starts: list[float] = []
    try:
        ok = len(v) >= 1 and all(len(p) == 2 and float(p[1]) >= 0 for p in v)
        if ok:
            starts = [float(p[0]) for p in v]
    except (TypeError, ValueError, IndexError, KeyError):
        ok = False
    if not ok or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        return "expected [[start_s, rate], ...] with start_s from 0 increasing and rates >= 0"
    return None


def check_arrivals(a: dict, where: str | None = None) -> None:
    """Cross-field checks of a resolved ``arrivals`` section (fields come from ARRIVALS_SPEC)."""
    proc = a["process"]
    if proc in ("poisson", "gamma", "daily") and a.get("rate") is None:
        raise UserError(f"missing; process '{proc}' needs a rate (arrivals per second)",
                        where=where, field="arrivals.rate")
    if proc == "replay":
        if not a.get("trace"):
            raise UserError("missing; process 'replay' needs a trace (path or "
                            f"{', '.join(TRACE_ALIASES)})", where=where, field="arrivals.trace")
        # The file itself is looked up when the run starts (make_arrivals); the aliases name
        # traces embedded in the package (sim/core/arrival_data), so they always exist.
    if proc == "piecewise":
        if a.get("schedule") is None:
            raise UserError("missing; process 'piecewise' needs [[start_s, rate], ...]",
                            where=where, field="arrivals.schedule")
        sched = a["schedule"]
        if a.get("period_s") is not None and float(sched[-1][0]) >= a["period_s"]:
            raise UserError("every step must start before period_s", where=where,
                            field="arrivals.schedule")
        if sum(float(r) for _s, r in sched) <= 0:
            raise UserError("at least one rate must be > 0", where=where, field="arrivals.schedule")
        if a.get("period_s") is None and float(sched[-1][1]) <= 0:
            raise UserError("without period_s the last rate holds forever, so it must be > 0",
                            where=where, field="arrivals.schedule")
    if proc == "daily" and not 0 <= a.get("amplitude", 0) < 1:
        raise UserError(f"got {a.get('amplitude')!r}; must be in [0, 1)", where=where,
                        field="arrivals.amplitude")


def make_arrivals(a: dict, n: int, rng: np.random.Generator, where: str | None = None) -> Arrivals:
    """Arrival times (and recorded prompts, for a replay asking for them) of ``n`` queries."""
    check_arrivals(a, where)
    proc = a["process"]
    if proc == "poisson":
        return Arrivals(poisson(a["rate"], n, rng))
    if proc == "gamma":
        return Arrivals(gamma(a["rate"], a.get("burstiness", 1.0), n, rng))
    if proc == "piecewise":
        return Arrivals(piecewise(a["schedule"], a.get("period_s"), n, rng))
    if proc == "daily":
        period = a.get("period_s") or 86400.0
        peak = a.get("peak_s")
        return Arrivals(daily(a["rate"], a.get("amplitude", 0.5), period,
                              period / 2 if peak is None else peak, n, rng))
    if proc == "replay":
        path = resolve_trace(a["trace"], where)
        times, tokens = replay(path, n, time_scale=a.get("time_scale", 1.0), rate=a.get("rate"))
        return Arrivals(times, tokens if a.get("trace_prompts") else None)
    raise UserError(f"unknown arrival process {proc!r}", where=where, field="arrivals.process")


__all__ = [
    "PROCESSES",
    "TRACE_ALIASES",
    "Arrivals",
    "_schedule_ok",
    "check_arrivals",
    "daily",
    "gamma",
    "make_arrivals",
    "piecewise",
    "poisson",
    "read_trace",
    "replay",
]
