"""Property-based: broken scenarios, trace files and arrival files either load (and then hold
sane values) or raise one :class:`UserError` with a short one-line message, never another
exception.  Bounded: few examples, no deadline surprises on a loaded machine."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tests/policies (on sys.path via tests/) must not shadow policies/
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from helpers import make_traces  # noqa: E402

from sim.core.arrivals import read_trace  # noqa: E402
from sim.foundation.errors import UserError  # noqa: E402
from sim.experiments.scenario import validate_scenario  # noqa: E402
from traces.schema import TraceSet  # noqa: E402

FUZZ = settings(max_examples=30, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

junk = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=10)

BASE = {
    "budget": 250,
    "seed": 0,
    "traces": {"sets": ["qwen25-math-instruct_math100_t0.7_k8"]},
    "arrivals": {"process": "poisson", "rate": 40, "queries": 30},
    "engine": {"replicas": 1},
    "predictor": {"kind": "noisy", "sigma": 0.5},
    "policies": ["uniform"],
}
KEYS = ["budget", "seed", "budget_utilisation", "traces.sets", "traces.mix", "arrivals.rate",
        "arrivals.queries", "arrivals.burstiness", "arrivals.schedule", "engine.replicas",
        "engine.max_num_seqs", "engine.c0_ms", "predictor.sigma", "policies", "slo.ttft_ms"]


def _contract(exc: UserError) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) < 600, text[:600]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(KEYS), junk, min_size=1, max_size=3))
def test_broken_scenarios_raise_user_error_or_load_sane(changes):
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        sc = validate_scenario(data, where="fuzz.yaml")
    except UserError as exc:
        _contract(exc)
        return
    assert 0 < sc["arrivals"]["queries"] <= 10_000_000
    assert 0 < sc["engine"]["replicas"] <= 4096
    assert sc["budget"] is None or np.isfinite(sc["budget"]) and 0 < sc["budget"] <= 1e7


token_values = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True))


@FUZZ
@given(tokens=st.lists(st.lists(token_values, max_size=4), max_size=4),
       prompts=st.lists(st.integers(-5, 10**5), max_size=5), as_float=st.booleans())
def test_broken_trace_files_raise_user_error_or_load_sane(tmp_path, tokens, prompts, as_float):
    good = make_traces([[(100, True)]]).to_table()
    n = len(tokens)
    typ = pa.float64() if as_float else pa.int64()
    try:
        tok = pa.array([[float(x) if as_float else int(x) for x in q] for q in tokens],
                       pa.list_(typ))
    except (OverflowError, ValueError):  # NaN or inf as an int64: not a table we can write
        return
    cols = {name: good.column(name).to_pylist()[:1] * n for name in good.column_names}
    cols["sample_tokens"] = tok
    cols["sample_correct"] = pa.array([[True] * len(q) for q in tokens], pa.list_(pa.bool_()))
    cols["sample_truncated"] = pa.array([[False] * len(q) for q in tokens], pa.list_(pa.bool_()))
    cols["query_id"] = [f"q{i}" for i in range(n)]
    cols["prompt_tokens"] = pa.array((prompts + [50] * n)[:n], pa.int64())
    table = pa.table({k: cols[k] for k in good.column_names}).replace_schema_metadata(
        good.schema.metadata)
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    try:
        ts = TraceSet.read(path)
    except UserError as exc:
        _contract(exc)
        assert "t.parquet" in str(exc)
        return
    assert ts.n_queries >= 1 and np.all(np.diff(ts.offsets) >= 1)
    assert np.all(ts.sample_tokens >= 0) and np.all(ts.prompt_tokens >= 0)


cell = st.one_of(st.integers(-10**6, 10**13).map(str), st.floats().map(repr),
                 st.sampled_from(["NaN", "null", '"x"', "", "1e400", "-1"]))


@FUZZ
@given(rows=st.lists(st.tuples(cell, cell), max_size=6), counter=st.integers(0, 10**9))
def test_broken_arrival_files_raise_user_error_or_load_sane(tmp_path, rows, counter):
    path = tmp_path / f"a{counter}.jsonl"  # read_trace caches by path: a fresh name each time
    path.write_text("".join(f'{{"timestamp": {t or 0}, "input_length": {n or 0}}}\n'
                            for t, n in rows))
    try:
        t, tokens = read_trace(str(path))
    except UserError as exc:
        _contract(exc)
        assert path.name in str(exc)
        return
    assert np.all(np.isfinite(t)) and np.all(t >= 0) and t[-1] > 0
    assert np.all(tokens >= 1)


RECORDED = REPO / "sim" / "calibration_data" / "cpu_runs" / "tiny-4L-h512_r1.5"
REQUEST_KEYS = ["input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts",
                "arrival_time", "scheduled_ts"]
META_KEYS = ["engine_kwargs.max_num_seqs", "engine_kwargs.data_parallel_size",
             "engine_kwargs.tensor_parallel_size", "kv_cache.num_gpu_blocks", "kv_cache.block_size",
             "hardware.device_count", "started_at", "engine_kwargs", "kv_cache"]


@FUZZ
@given(req=st.dictionaries(st.tuples(st.integers(0, 4), st.sampled_from(REQUEST_KEYS)), junk,
                           max_size=3),
       meta=st.dictionaries(st.sampled_from(META_KEYS), junk, max_size=2),
       ts=st.sampled_from(["keep", "drop", "t,running,waiting\n1,2,3\n", "t,running\nx,-1\n",
                           "", "\x00\x01,\n\"", "t,kv_cache_pct\n1,250\n"]))
def test_broken_recorded_runs_raise_user_error_or_load_sane(tmp_path, req, meta, ts):
    """Recorded vLLM run folders (``calibrate``'s input) with junk in requests, meta, time series."""
    import json
    import shutil
    import tempfile

    from sim.experiments.recorded import MAX_TOKENS, read_recorded

    d = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"  # a fresh folder per example
    shutil.copytree(RECORDED, d)
    rows = [json.loads(line) for line in (d / "requests.jsonl").read_text().splitlines()]
    for (i, key), value in req.items():
        rows[i][key] = value
    (d / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = json.loads((d / "meta.json").read_text())
    for dotted, value in meta.items():
        node = m
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[leaf] = value
    (d / "meta.json").write_text(json.dumps(m))
    if ts == "drop":
        (d / "timeseries.csv").unlink()
    elif ts != "keep":
        (d / "timeseries.csv").write_text(ts)
    try:
        rec = read_recorded(d)
    except UserError as exc:
        _contract(exc)
        assert str(d) in str(exc)
        return
    r = rec.requests
    assert len(r) == len(rows)
    assert (r["input_toks"] >= 0).all() and (r["output_toks"] >= 1).all()
    assert (r[["input_toks", "output_toks"]] <= MAX_TOKENS).all().all()
    assert (r["queued_ts"] <= r["first_token_ts"]).all() and (r["first_token_ts"] <= r["last_token_ts"]).all()
    kw = rec.meta.get("engine_kwargs") or {}
    assert all(kw.get(k) is None or 1 <= kw[k] <= 4096 for k in ("data_parallel_size",
                                                                   "tensor_parallel_size"))
    if rec.timeseries is not None:
        num = rec.timeseries.select_dtypes("number")
        assert np.isfinite(num.to_numpy(float)).all() and (num.to_numpy(float) >= 0).all()


@pytest.mark.parametrize("argv", [["validate", "fuzz.yaml"], ["run", "fuzz.yaml"]])
def test_cli_on_a_fuzzed_scenario_file(tmp_path, monkeypatch, capsys, argv):
    from sim.experiments.cli import main

    (tmp_path / "fuzz.yaml").write_text("budget: .nan\narrivals: {queries: 1e400}\n"
                                        "traces: {sets: [x]}\npolicies: [uniform]\n")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "fuzz.yaml" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fuzz.yaml"]
