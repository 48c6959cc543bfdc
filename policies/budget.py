"""Budgets given as a token rate: the engine's decode throughput at a target utilisation.

``budget_utilisation: u`` in a scenario means the run may spend u times the tokens per second
the engine can decode at a full running batch: ``rate = u * replicas * M / step_s(0, M)`` with
M = ``max_num_seqs`` (a decode-only step, prompts and KV growth ignored, so it is the
throughput's upper end).  The mean tokens per query follow as ``rate / arrival rate`` (the
arrival rate measured on the run's own arrivals).  Window and batch decisions then get the
token rate times the time elapsed since the previous decision (:mod:`sim.core.allocation`), so a
burst of arrivals gets fewer tokens each: the price reflects load.  ``clear-posted`` banks the
rate times the clock instead of the target times the arrivals.
"""

from __future__ import annotations

import numpy as np


def decode_throughput(cfg) -> float:
    """Tokens per second of all replicas decoding a full batch (``cfg``: EngineConfig)."""
    m = cfg.max_num_seqs
    return cfg.replicas * m / cfg.step.step_s(0, m, 0)


def utilisation_token_rate(cfg, utilisation: float) -> float:
    return float(utilisation * decode_throughput(cfg))


def per_query_budget(token_rate: float, arrival_s: np.ndarray) -> float:
    """Mean tokens per query the token rate allows at the run's mean arrival rate."""
    n = len(arrival_s)
    horizon = float(arrival_s[-1]) if n else 0.0
    return float(token_rate * horizon / n) if n and horizon > 0 else float(token_rate)
