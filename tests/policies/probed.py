"""Hand-built trace sets with forced-answer probes, in the agreed layout (probe_* arrays, CSR
over flat samples; docs/reasoning.md).  Uses ``traces.schema.TraceSet`` itself once it carries
the probe fields, a faithful local stand-in until then."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.schema import TraceSet

PROBE_FIELDS = ("probe_offsets", "probe_position", "probe_answer", "probe_certain",
                "probe_correct", "probe_out_tokens")

if all(f in TraceSet.__dataclass_fields__ for f in PROBE_FIELDS):
    Probed = TraceSet
else:
    @dataclass(frozen=True, eq=False)
    class Probed(TraceSet):
        probe_offsets: np.ndarray | None = None
        probe_position: np.ndarray | None = None
        probe_answer: np.ndarray | None = None
        probe_certain: np.ndarray | None = None
        probe_correct: np.ndarray | None = None
        probe_out_tokens: np.ndarray | None = None

        @property
        def has_probes(self) -> bool:
            return self.probe_offsets is not None


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
    fields = {f: getattr(base, f) for f in TraceSet.__dataclass_fields__ if f != "_cache"}
    return Probed(**fields, probe_offsets=off, probe_position=pos, probe_answer=ans,
                  probe_certain=np.full(len(ans), certain), probe_correct=ans == right,
                  probe_out_tokens=np.full(len(ans), out_tokens, dtype=np.int32))
