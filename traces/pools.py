"""Difficulty pools and the paper's four traffic streams.

The CLEAR paper serves four 500-query streams, *Balanced*, *MostlyEasy*, *MostlyHard* and
*UShaped*, mixing pools of easy and hard queries, but publishes neither the pools nor the
proportions.  This module fixes both, from the traces (see ``docs/traces.md`` for the
justification):

* **Pools** by the query's true emergence threshold tau (``traces.curves.true_tau``, or the
  fitted one under ``traces.outcomes: fitted``), with edges ``POOL_EDGES = (400, 800)`` tokens:
  ``easy`` tau <= 400, ``medium`` 400 < tau <= 800, ``hard`` tau > 800 or never solved.
* **Streams**: named pool proportions (``STREAMS``).  A stream of n queries holds *exactly*
  ``round(n * w)`` queries of each pool (largest-remainder rounding), drawn without replacement
  from the pool while it is large enough (a benchmark stream does not repeat a problem), with
  replacement otherwise, and shuffled into a random arrival order.
"""

from __future__ import annotations

import numpy as np

from sim.foundation.errors import UserError

POOLS = ("easy", "medium", "hard")
#: tau edges (tokens) between easy / medium / hard.
POOL_EDGES = (400.0, 800.0)
#: Edges for the reasoning sets (thousands of tokens): the terciles of tau over the solved
#: queries of the 12 embedded reasoning sets, rounded (see docs/reasoning-traces.md).
REASONING_EDGES = (1600.0, 3200.0)
#: Named edge presets for ``traces.pool_edges``; a set's ``meta["pool_edges"]`` names its own.
EDGE_PRESETS: dict[str, tuple[float, float]] = {"short": POOL_EDGES, "reasoning": REASONING_EDGES}


def edges_for(spec_edges, meta: dict, where: str | None = None) -> tuple[float, float]:
    """The pool edges of a run: explicit ``[lo, hi]``, a preset name, or (None) automatic:
    the preset the trace sets name in their metadata (``meta``, of one set or of a stack of
    sets with ``parts``) when they all agree, else ``short``."""
    if spec_edges is None:
        names = {m.get("pool_edges", "short") for m in meta.get("parts", [meta])}
        spec_edges = names.pop() if len(names) == 1 else "short"
        if spec_edges not in EDGE_PRESETS:
            spec_edges = "short"
    if isinstance(spec_edges, str):
        if spec_edges not in EDGE_PRESETS:
            raise UserError(f"got {spec_edges!r}; expected [easy_max, medium_max] or one of "
                            f"{', '.join(EDGE_PRESETS)}", where=where, field="traces.pool_edges")
        return EDGE_PRESETS[spec_edges]
    return tuple(float(x) for x in spec_edges)

#: The paper's four streams as pool proportions (ours: the paper does not publish them).
STREAMS: dict[str, dict[str, float]] = {
    "balanced": {"easy": 1 / 3, "medium": 1 / 3, "hard": 1 / 3},
    "mostlyeasy": {"easy": 0.5, "medium": 0.3, "hard": 0.2},
    "mostlyhard": {"easy": 0.2, "medium": 0.3, "hard": 0.5},
    "ushaped": {"easy": 0.45, "medium": 0.1, "hard": 0.45},
}


def pool_of(tau: np.ndarray, edges=POOL_EDGES) -> np.ndarray:
    """Pool index per query (0 easy, 1 medium, 2 hard); never-solved (tau = inf) is hard."""
    lo, hi = edges
    tau = np.asarray(tau, dtype=float)
    return np.where(tau <= lo, 0, np.where(tau <= hi, 1, 2)).astype(np.int64)


def check_pool_weights(pools: dict, where: str | None, field: str) -> dict[str, float]:
    """Validate a ``{easy: w, medium: w, hard: w}`` mapping; return it normalised to sum 1."""
    for name, w in pools.items():
        if name not in POOLS:
            raise UserError(f"unknown pool; allowed: {', '.join(POOLS)}", where=where,
                            field=f"{field}.{name}")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise UserError(f"got {w!r}; expected a weight >= 0", where=where, field=f"{field}.{name}")
    total = float(sum(pools.values()))
    if total <= 0:
        raise UserError("weights sum to 0; give at least one positive weight", where=where, field=field)
    return {p: float(pools.get(p, 0.0)) / total for p in POOLS}


def stream_counts(n: int, weights: dict[str, float]) -> np.ndarray:
    """Queries per pool in a stream of n: largest-remainder rounding of n * w (sums to n)."""
    w = np.array([weights.get(p, 0.0) for p in POOLS], dtype=float)
    w = w / w.sum()
    exact = n * w
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    # ties broken by pool order (easy first) so the result is deterministic
    order = np.lexsort((np.arange(len(w)), -(exact - counts)))
    counts[order[:short]] += 1
    return counts


def draw_stream(pool: np.ndarray, n: int, weights: dict[str, float], rng: np.random.Generator,
                within: np.ndarray | None = None, where: str | None = None) -> np.ndarray:
    """Query indices of an n-query stream with exact pool proportions, in random order.

    ``within`` gives optional per-query weights inside a pool (a dataset mix); a pool's draws
    are without replacement when the pool has enough queries with positive weight.
    """
    counts = stream_counts(n, weights)
    within = np.ones(len(pool)) if within is None else np.asarray(within, dtype=float)
    picks = []
    for k, name in enumerate(POOLS):
        if counts[k] == 0:
            continue
        rows = np.flatnonzero((pool == k) & (within > 0))
        if len(rows) == 0:
            raise UserError(f"the {name} pool is empty in these trace sets (weight "
                            f"{weights[name]:.3g}); give it weight 0 or add trace sets",
                            where=where, field="traces.pools")
        p = within[rows] / within[rows].sum()
        replace = counts[k] > len(rows)
        picks.append(rng.choice(rows, size=int(counts[k]), replace=replace, p=p))
    out = np.concatenate(picks)
    return out[rng.permutation(len(out))]
