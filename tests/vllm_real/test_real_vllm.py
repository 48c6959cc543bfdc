"""Real vLLM (CPU build) on a tiny local model: offline backend, API server, kill + resume,
timing files, ``traces import``, and the serving recorder feeding ``clearsim calibrate``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from collect_fakes import write_addition_problems

COLLECT = dict(samples=3, max_tokens=16, temperature=0.7, top_p=0.8, grader="numeric",
               tick_seconds=0.5, chunk_size=4)


def _session(serving_dir: Path) -> Path:
    sessions = sorted(serving_dir.glob("session-*"))
    assert sessions, f"no session folder in {serving_dir}"
    return sessions[0]


def _check_timing_files(session: Path, rows: int, n: int):
    req = [json.loads(line) for line in (session / "requests.jsonl").read_text().splitlines()]
    assert len(req) == rows and {r["n"] for r in req} == {n}
    for r in req:
        assert r["queued_ts"] <= r["scheduled_ts"] <= r["first_token_ts"] <= r["last_token_ts"]
        assert 1 <= r["output_toks"] <= COLLECT["max_tokens"] and r["input_toks"] > 0
    meta = json.loads((session / "meta.json").read_text())
    assert meta["num_requests"] == rows and meta["finished_at"]
    ts = pd.read_csv(session / "timeseries.csv")
    assert list(ts.columns) == ["t", "prompt_throughput", "gen_throughput", "running", "waiting",
                                "kv_cache_pct"]
    return req, meta, ts


def test_endpoint_backend_against_the_real_server_then_import(vllm_server, tmp_path,
                                                              clearsim_home, capsys):
    from sim.experiments.cli import main
    from traces.collect import collect
    from traces.schema import TraceSet

    probs = write_addition_problems(tmp_path / "add.jsonl", 6)
    res = collect(str(probs), endpoint=vllm_server.url, name="real-srv", concurrency=4, **COLLECT)
    ts = res.trace_set
    assert ts.n_queries == 6 and len(ts.sample_tokens) == 18
    assert np.all((ts.sample_tokens >= 1) & (ts.sample_tokens <= 16))
    # one request per sample: 18 timing rows of n=1, the server's own metrics sampled
    _, meta, series = _check_timing_files(_session(res.serving_dir), 18, 1)
    assert meta["vllm_version"] and meta["vllm_version"].startswith("0.")
    assert meta["timeseries_source"].startswith("GET /metrics") or len(series) >= 0
    # traces import of the result (our own format) reads back the same samples
    assert main(["traces", "import", "clearsim", str(res.trace_path), "--name", "real-imported"]) == 0
    capsys.readouterr()
    back = TraceSet.read(clearsim_home / "traces" / "real-imported.parquet")
    assert np.array_equal(back.sample_tokens, ts.sample_tokens)


def test_kill_then_resume_against_the_real_server(vllm_server, tmp_path):
    """SIGKILL the collector once some queries are committed; the rerun resumes them."""
    probs = write_addition_problems(tmp_path / "add.jsonl", 16)
    home = tmp_path / "home"
    env = {**os.environ, "CLEARSIM_HOME": str(home)}
    cmd = [sys.executable, "-m", "sim", "traces", "collect", "--endpoint", vllm_server.url,
           "--problems", str(probs), "--name", "killed", "--samples", "3", "--max-tokens", "48",
           "--grader", "numeric", "--chunk-size", "2", "--concurrency", "2"]
    committed = home / "traces" / "killed.collect" / "queries.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if committed.is_file() and len(committed.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the collector finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    done_before = len(committed.read_text().splitlines())
    assert 2 <= done_before < 16
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "resum" in out.stderr.lower()
    from traces.schema import TraceSet

    ts = TraceSet.read(home / "traces" / "killed.parquet")
    assert ts.n_queries == 16 and len(ts.sample_tokens) == 48


def test_record_serving_then_calibrate(vllm_server, tmp_path):
    """The load generator against the real server: pinned lengths, the server's KV size, and
    a folder that `clearsim calibrate` reads and fits."""
    from sim.experiments.calibrate import calibrate, load_run
    from traces.collect.loadgen import poisson_schedule, record_serving

    (d,) = record_serving(tmp_path / "runs", endpoint=vllm_server.url, rates=[4.0], requests=16,
                          prompt_tokens=(16, 64), output_tokens=(4, 12), max_seconds=60,
                          max_num_seqs=8, tick_seconds=0.5, name="tiny", log=lambda m: None)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["kv_cache"]["num_gpu_blocks"] > 0 and meta["engine_kwargs"]["max_num_seqs"] == 8
    rows = [json.loads(line) for line in (d / "requests.jsonl").read_text().splitlines()]
    _, prompt, output = poisson_schedule(4.0, 16, 0, (16, 64), (4, 12))
    assert sorted(r["output_toks"] for r in rows) == sorted(output.tolist())  # ignore_eos pins
    assert sorted(r["input_toks"] for r in rows) == sorted(prompt.tolist())   # token-id prompts
    run = load_run(d)
    assert run.flags["kv_source"] == "recorded" and run.flags["max_num_seqs"] == 8
    res = calibrate(d, max_evals=10)
    assert len(res["rows"]) == 9 and res["fitted"]["c0_us"] > 0


def test_offline_backend_with_the_real_llm(tiny_model, tmp_path, clearsim_home):
    """vllm.LLM + SamplingParams(n=3): one timing row per query (n=3), request metrics,
    get_metrics() time series, the engine's KV size in meta.json."""
    from traces.collect import collect

    probs = write_addition_problems(tmp_path / "add.jsonl", 4)
    res = collect(str(probs), model=str(tiny_model), name="real-off", max_model_len=1024,
                  max_num_seqs=8, dtype="float32", **COLLECT)
    ts = res.trace_set
    assert ts.n_queries == 4 and len(ts.sample_tokens) == 12
    _, meta, _ = _check_timing_files(_session(res.serving_dir), 4, 3)
    assert meta["kv_cache"]["num_gpu_blocks"] > 0
    assert meta["engine_kwargs"]["max_num_seqs"] == 8
