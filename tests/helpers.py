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


def cli_error(capsys, argv: list[str], *expected: str) -> str:
    """Run ``clearsim ARGV`` in-process; it must fail as bad input does: exit 2, one line on
    stderr, no traceback, holding every ``expected`` text.  Returns that line."""
    from sim.experiments.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]
