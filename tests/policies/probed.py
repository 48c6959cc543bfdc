"""Hand-built trace sets with forced-answer probes (``traces.schema.TraceSet``'s probe arrays,
CSR over flat samples), for the early-exit tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from traces.schema import TraceSet


def probed_traces(queries, *, out_tokens=5, right=7, certain=False) -> TraceSet:
    """``queries``: per query, a list of runs ``(tokens, correct, answers)``; run j's probes sit
    at 64, 128, ... (one per answer id, each graded correct iff it equals ``right``)."""
    records = [{"query_id": f"q{i}", "dataset": "toy", "prompt_tokens": 0,
                "samples": [{"tokens": t, "correct": c} for t, c, _ in runs]}
               for i, runs in enumerate(queries)]
    base = TraceSet.from_records("toy-probed", {"source": "tests"}, records)
    answers = [np.asarray(a, dtype=np.int32) for runs in queries for _, _, a in runs]
    off = np.zeros(len(answers) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in answers], out=off[1:])
    ans = np.concatenate(answers) if answers else np.zeros(0, np.int32)
    pos = np.concatenate([64 * np.arange(1, len(a) + 1, dtype=np.int32) for a in answers])
    return dataclasses.replace(base, _cache={}, probe_offsets=off, probe_position=pos, probe_answer=ans,
                  probe_certain=np.full(len(ans), certain), probe_correct=ans == right,
                  probe_out_tokens=np.full(len(ans), out_tokens, dtype=np.int32))
