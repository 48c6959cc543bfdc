"""Timing pieces: Prometheus parsing, load snapshots, the sampler, request metrics, checkpoints."""

from __future__ import annotations

import json
import sys
import time
import types

import numpy as np
import pytest

from sim.foundation.errors import UserError
from traces.collect.checkpoint import Checkpoint
from traces.collect.timing import MetricsSampler, parse_prometheus_text, snapshot_from
from traces.collect.vllm_backend import timing_from_metrics

EXPOSITION = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 200.0
vllm:num_requests_running{engine="1",model_name="m"} 56.0
vllm:num_requests_waiting{engine="0",model_name="m"} 7.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1.5e4
vllm:generation_tokens_total{engine="0",model_name="m"} 123456.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9
process_cpu_seconds_total 12.5
"""


def test_prometheus_text_is_summed_per_metric():
    snap = snapshot_from(parse_prometheus_text(EXPOSITION))
    assert snap == {"running": 256.0, "waiting": 7.0, "prompt_tokens": 15000.0,
                    "generation_tokens": 123456.0, "kv_cache_usage": pytest.approx(0.375)}


def test_reader_names_without_total_and_the_legacy_kv_gauge():
    snap = snapshot_from([("vllm:generation_tokens", 10), ("vllm:gpu_cache_usage_perc", 0.2)])
    assert snap["generation_tokens"] == 10 and snap["kv_cache_usage"] == 0.2
    assert snapshot_from([("process_cpu_seconds_total", 1.0)]) is None


def test_sampler_turns_counters_into_rates():
    counter = iter(range(0, 10_000, 100))
    rows = []
    sampler = MetricsSampler(
        lambda: {"generation_tokens": float(next(counter)), "running": 4, "waiting": 0,
                 "kv_cache_usage": 0.5},
        rows.append, tick=0.02)
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    assert sampler.status == "sampled" and len(rows) >= 3
    t, prompt_rate, gen_rate, running, waiting, kv = rows[0]
    assert 0 < t < 0.2 and prompt_rate == 0 and gen_rate > 100 and (running, kv) == (4, 50.0)


def test_sampler_without_metrics_reports_why():
    sampler = MetricsSampler(lambda: None, lambda row: None, tick=0.01)
    sampler.start()
    sampler.stop()
    assert sampler.status.startswith("unavailable")

    def boom():
        raise RuntimeError("Stat logging disabled")

    failing = MetricsSampler(boom, lambda row: None, tick=0.01)
    failing.start()
    failing.stop()
    assert "Stat logging disabled" in failing.status


def test_request_metrics_of_vllm_v1_and_v0():
    v1 = types.SimpleNamespace(arrival_time=1.7e9, queued_ts=10.0, scheduled_ts=10.5,
                               first_token_ts=11.0, last_token_ts=20.0, num_generation_tokens=300)
    t = timing_from_metrics("q/1", 80, v1, n=16, fallback_out=999)
    assert (t.input_toks, t.output_toks, t.queued_ts, t.last_token_ts, t.n) == (80, 300, 10.0,
                                                                                  20.0, 16)
    v0 = types.SimpleNamespace(arrival_time=5.0, last_token_time=9.0, first_scheduled_time=6.0,
                               first_token_time=7.0, time_in_queue=1.0, finished_time=9.0)
    t = timing_from_metrics("q/2", 80, v0, n=1, fallback_out=42)
    assert (t.queued_ts, t.scheduled_ts, t.first_token_ts, t.output_toks) == (5.0, 6.0, 7.0, 42)
    assert timing_from_metrics("q/3", 80, None, n=1, fallback_out=1) is None


def test_offline_run_without_request_metrics_writes_no_rows(fake_vllm, addition, monkeypatch):
    from traces.collect import collect

    llm_cls = sys.modules["vllm"].LLM
    original = llm_cls.generate

    def no_metrics(self, *a, **k):
        outs = original(self, *a, **k)
        for o in outs:
            o.metrics = None
        return outs

    monkeypatch.setattr(llm_cls, "generate", no_metrics)
    res = collect(str(addition), model="m", samples=2, max_tokens=40, grader="numeric",
                  tick_seconds=0.02)
    run = res.serving_dir / "session-01"
    assert (run / "requests.jsonl").read_text() == ""
    assert json.loads((run / "meta.json").read_text())["num_requests"] == 0
    assert res.trace_set.n_queries == 12


# ---------------------------------------------------------------- checkpoint
FP = {"model": "m", "samples": 4}


def rec(qid: str) -> dict:
    return {"query_id": qid, "prompt_tokens": 3, "max_tokens": 9,
            "samples": [{"tokens": 1, "finish_reason": "stop", "answer": "1", "correct": True}]}


def test_checkpoint_round_trip_and_refusals(tmp_path):
    ck = Checkpoint(tmp_path / "c", FP)
    ck.commit([rec("a"), rec("b")])
    with pytest.raises(RuntimeError, match="generated twice"):
        ck.commit([rec("a")])
    again = Checkpoint(tmp_path / "c", dict(FP))
    assert set(again.records) == {"a", "b"}
    with pytest.raises(UserError, match="samples: 4 in the checkpoint, 5 now"):
        Checkpoint(tmp_path / "c", {**FP, "samples": 5})


def test_checkpoint_with_nothing_done_takes_new_arguments(tmp_path):
    Checkpoint(tmp_path / "c", FP)
    assert Checkpoint(tmp_path / "c", {**FP, "samples": 5}).fingerprint["samples"] == 5


def test_corrupt_checkpoint_lines_are_refused(tmp_path):
    ck = Checkpoint(tmp_path / "c", FP)
    ck.commit([rec("a")])
    path = tmp_path / "c" / "queries.jsonl"
    path.write_text(path.read_text() + "garbage\n" + json.dumps(rec("b")) + "\n")
    with pytest.raises(UserError, match="corrupt checkpoint line.*--restart"):
        Checkpoint(tmp_path / "c", FP)
    path.write_text(json.dumps(rec("a")) + "\n" + json.dumps(rec("a")) + "\n")
    with pytest.raises(UserError, match="committed twice"):
        Checkpoint(tmp_path / "c", FP)


# ------------------------------------------------------------------ estimate
def test_estimate_matches_the_step_model_in_closed_form():
    from sim.experiments.collect_estimate import chunk_seconds

    c = dict(c0=7051.8, c1=19.538, c2=25.432, max_num_seqs=256, max_num_batched_tokens=4096)
    prompts, lengths = np.full(256, 10), np.full(256, 100)
    # one prefill step for all 256 (emitting their first tokens), then 99 decode steps
    want = (c["c0"] + c["c1"] * 2560) + 99 * (c["c0"] + c["c2"] * 256)
    assert chunk_seconds(prompts, lengths, **c) == pytest.approx(want / 1e6)
    # one sequence more must wait for a free slot: a second, lone wave of 100 steps
    longer = chunk_seconds(np.full(257, 10), np.full(257, 100), **c)
    assert longer == pytest.approx((want + c["c0"] + c["c1"] * 10 + 99 * (c["c0"] + c["c2"])) / 1e6)
