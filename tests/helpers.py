"""Test helpers importable from any test module (``from helpers import make_traces``)."""

from __future__ import annotations

from traces.schema import TraceSet


def make_traces(queries: list[list[tuple[int, bool]]], name: str = "hand", prompt: int = 50,
                dataset: str = "hand") -> TraceSet:
    """A trace set from [[(tokens, correct), ...] per query]."""
    records = [
        {
            "query_id": f"{dataset}/{i}",
            "dataset": dataset,
            "level": None,
            "subject": None,
            "prompt_tokens": prompt,
            "max_tokens": None,
            "samples": [{"tokens": t, "correct": c, "truncated": False} for t, c in q],
        }
        for i, q in enumerate(queries)
    ]
    return TraceSet.from_records(name, {"model": "hand-made"}, records)
