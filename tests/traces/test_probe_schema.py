"""The optional probe arrays of a TraceSet: built, stacked, subset and round-tripped through
Parquet; files without probes still read as sets without them."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from sim.foundation.errors import UserError
from traces.schema import PROBE_FIELDS, TraceSet


def _probes(pos, ans, cert, cor, out):
    return {"position": pos, "answer": ans, "certain": cert, "correct": cor, "out_tokens": out}


def tiny(with_probes=True, prefix="q"):
    recs = [
        {"query_id": f"{prefix}0", "dataset": "d", "prompt_tokens": 10, "samples": [
            {"tokens": 200, "correct": True,
             "probes": _probes([64, 128, 192], [0, 1, 1], [False, True, True],
                               [False, True, True], [5, 6, 7])},
            {"tokens": 70, "correct": False,
             "probes": _probes([64], [-1], [False], [False], [3])}]},
        {"query_id": f"{prefix}1", "dataset": "d", "prompt_tokens": 12, "samples": [
            {"tokens": 300, "correct": False,
             "probes": _probes([64, 128, 192, 256], [0, 0, 2, 2], [True] * 4,
                               [True, True, False, False], [9, 9, 9, 9])}]},
        {"query_id": f"{prefix}2", "dataset": "d", "prompt_tokens": 8, "samples": [
            {"tokens": 40, "correct": True, "probes": _probes([], [], [], [], [])}]},
    ]
    if not with_probes:
        for r in recs:
            for s in r["samples"]:
                del s["probes"]
    return TraceSet.from_records("tiny", {"m": 1}, recs)


def _same_probes(a: TraceSet, b: TraceSet):
    assert a.has_probes and b.has_probes
    np.testing.assert_array_equal(a.probe_offsets, b.probe_offsets)
    for f in PROBE_FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert getattr(a, f).dtype == getattr(b, f).dtype


def test_from_records_builds_csr_over_samples():
    ts = tiny()
    assert ts.has_probes
    np.testing.assert_array_equal(ts.probe_offsets, [0, 3, 4, 8, 8])
    np.testing.assert_array_equal(ts.probe_position, [64, 128, 192, 64, 64, 128, 192, 256])
    np.testing.assert_array_equal(ts.probe_sample, [0, 0, 0, 1, 2, 2, 2, 2])
    assert ts.probe_position.dtype == np.int32 and ts.probe_correct.dtype == np.bool_
    assert not tiny(with_probes=False).has_probes


def test_parquet_round_trip_keeps_probes(tmp_path):
    ts = tiny()
    back = TraceSet.read(ts.write(tmp_path / "t.parquet"))
    _same_probes(ts, back)
    np.testing.assert_array_equal(back.sample_tokens, ts.sample_tokens)


def test_file_without_probe_columns_reads_without_probes(tmp_path):
    ts = tiny(with_probes=False)
    path = ts.write(tmp_path / "t.parquet")
    assert "sample_probes" not in pq.read_schema(path).names
    back = TraceSet.read(path)
    assert not back.has_probes and back.probe_position is None


def test_subset_carries_each_samples_probes():
    ts = tiny()
    sub = ts.subset(np.array([2, 0]))
    np.testing.assert_array_equal(sub.probe_offsets, [0, 0, 3, 4])
    np.testing.assert_array_equal(sub.probe_answer, [0, 1, 1, -1])
    np.testing.assert_array_equal(sub.probe_out_tokens, [5, 6, 7, 3])
    _same_probes(ts.subset(np.arange(ts.n_queries)), ts)


def test_concat_stacks_probes_and_drops_them_if_a_part_has_none():
    a, b = tiny(prefix="a"), tiny(prefix="b")
    both = TraceSet.concat("ab", [a, b])
    np.testing.assert_array_equal(both.probe_offsets, np.concatenate([a.probe_offsets,
                                                                      a.probe_offsets[1:] + 8]))
    _same_probes(both.subset(np.arange(3, 6)), b)
    assert not TraceSet.concat("ac", [a, tiny(False, prefix="c")]).has_probes


def test_inconsistent_probe_columns_are_one_line_error(tmp_path):
    ts = tiny()
    table = ts.to_table().drop_columns(["probe_correct"])
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(UserError, match="probe_correct"):
        TraceSet.read(path)
