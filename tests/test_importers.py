"""The generations importer: round trips, the embedded sets, and every kind of bad file."""

import json

import numpy as np
import pytest

from sim.foundation.errors import UserError
from traces.embed import PROVENANCE, REASONING, build_embedded
from traces.importers import import_generations
from traces.registry import embedded_dir, list_trace_sets, load_trace_set
from traces.schema import TraceSet

GOOD = {"query_id": "q/0", "dataset": "d", "level": 3, "subject": "Algebra", "prompt_tokens": 12,
        "max_tokens": 2048, "samples": [{"tokens": 40, "correct": True, "truncated": False},
                                        {"tokens": 2048, "correct": False, "truncated": True}]}


def write_lines(path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n" for x in lines))
    return path


def test_round_trip_keeps_every_number(tmp_path):
    second = dict(GOOD, query_id="q/1", level=None, subject=None, max_tokens=None,
                  samples=[{"tokens": 7, "correct": False}])
    ts = import_generations(write_lines(tmp_path / "g.jsonl", [GOOD, second]), "g", {"model": "m"})
    back = TraceSet.read(ts.write(tmp_path / "g.parquet"))
    assert back.name == "g" and back.meta["model"] == "m" and back.meta["format"] == "generations"
    for f in ("query_id", "dataset", "level", "subject", "prompt_tokens", "max_tokens", "offsets",
              "sample_tokens", "sample_correct", "sample_truncated"):
        assert np.array_equal(getattr(ts, f), getattr(back, f)), f
    assert back.level.tolist() == [3, -1] and back.subject.tolist() == ["Algebra", None]
    assert back.samples_per_query.tolist() == [2, 1]


def test_subset_and_concat_keep_samples_with_their_queries(tmp_path):
    a = import_generations(write_lines(tmp_path / "a.jsonl", [GOOD, dict(GOOD, query_id="q/1", samples=[{"tokens": 5, "correct": True}])]), "a")
    sub = a.subset(np.array([1]))
    assert sub.query_id.tolist() == ["q/1"] and sub.sample_tokens.tolist() == [5]
    both = TraceSet.concat("ab", [a, sub])
    assert both.n_queries == 3 and both.sample_tokens.tolist() == [40, 2048, 5, 5]
    assert both.offsets.tolist() == [0, 2, 3, 4]


BAD = [
    ('{"query_id": "q/0", "dataset": "d"', "", "not valid JSON"),  # truncated line
    ([1, 2], "", "expected a JSON object"),
    (dict(GOOD, samples=[]), "field 'samples'", "non-empty list"),
    (dict(GOOD, samples=[{"tokens": -3, "correct": True}]), "field 'samples[0].tokens'", "non-negative"),
    (dict(GOOD, samples=[{"tokens": 3, "correct": "yes"}]), "field 'samples[0].correct'", "true or false"),
    (dict(GOOD, samples=[{"tokens": 3.5, "correct": True}]), "field 'samples[0].tokens'", "integer"),
    (dict(GOOD, prompt_tokens=-1), "field 'prompt_tokens'", "non-negative"),
    ({k: v for k, v in GOOD.items() if k != "query_id"}, "field 'query_id'", "missing"),
    (dict(GOOD, level="hard"), "field 'level'", "integer or null"),
]


@pytest.mark.parametrize("line,where,what", BAD)
def test_bad_lines_name_file_line_and_field(tmp_path, line, where, what):
    path = write_lines(tmp_path / "bad.jsonl", [dict(GOOD, query_id="ok/0"), line])
    with pytest.raises(UserError) as err:
        import_generations(path, "bad")
    msg = str(err.value)
    assert msg.startswith(f"{path}:2: ") and where in msg and what in msg
    assert "\n" not in msg


def test_duplicates_empty_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="duplicate query id"):
        import_generations(write_lines(tmp_path / "d.jsonl", [GOOD, GOOD]), "d")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no queries"):
        import_generations(tmp_path / "e.jsonl", "e")
    with pytest.raises(UserError, match="not found"):
        import_generations(tmp_path / "nope.jsonl", "n")
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a clearsim trace file"):
        TraceSet.read(tmp_path / "x.parquet")


def test_every_public_recording_is_embedded_with_provenance():
    names = list_trace_sets()
    for name, prov in PROVENANCE.items():
        assert name in names
        ts = load_trace_set(name)
        for key in ("model", "decoding", "source", "licence"):
            assert ts.meta[key] == prov[key]
    assert len(PROVENANCE) == 20  # 8 short-answer sets + 12 reasoning sets


def test_embedded_sets_equal_a_fresh_import(shared_data, tmp_path):
    # the reasoning sets grade 540k probes: one of them is rebuilt in
    # tests/traces/test_reasoning_traces.py
    short = [n for n in PROVENANCE if n not in REASONING]
    build_embedded(shared_data / "generations", tmp_path, only=short)
    for name in short:
        fresh = TraceSet.read(tmp_path / f"{name}.parquet")
        shipped = TraceSet.read(embedded_dir() / f"{name}.parquet")
        assert fresh.meta == shipped.meta
        for f in ("query_id", "prompt_tokens", "offsets", "sample_tokens", "sample_correct"):
            assert np.array_equal(getattr(fresh, f), getattr(shipped, f)), (name, f)
