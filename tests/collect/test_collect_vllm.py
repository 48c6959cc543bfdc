"""The collector on the fake vLLM engine: counting, truncation, grading, resume, provenance, timing."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from collect_fakes import FAKE_VERSION, fake_generation, write_addition_problems
from sim.foundation.errors import UserError
from traces.collect import collect
from traces.collect.prompting import DEFAULT_SYSTEM, query_seed
from traces.registry import load_trace_set, user_dir
from traces.schema import TraceSet

BASE = dict(model="fake/Math-7B", samples=4, max_tokens=40, grader="numeric", chunk_size=5,
            tick_seconds=0.02)


def sidecar(result) -> list[dict]:
    return [json.loads(line) for line in result.samples_path.read_text().splitlines()]


def expected_samples(control) -> dict[int, tuple]:
    """What the fake model generated, by sample seed: (token ids, text, finish reason)."""
    return {seed: fake_generation(text, seed, cap) for text, seed, cap in control.generated}


def test_token_counts_are_the_generated_token_ids(fake_vllm, addition):
    res = collect(str(addition), **BASE)
    expected = expected_samples(fake_vllm)
    ts = res.trace_set
    assert ts.n_queries == 12 and len(ts.sample_tokens) == 48
    for i, qid in enumerate(ts.query_id):
        for k in range(4):
            ids, text, _ = expected[query_seed(0, qid) + k]
            got = int(ts.sample_tokens[ts.offsets[i] + k])
            assert got == len(ids)
            if "boxed" in text:  # the fake writes two words per token: a re-tokenisation differs
                assert got != len(text.split())
    # the prompt length is the engine's, chat template included (not the bare question's)
    assert all(ts.prompt_tokens == len(fake_vllm.instances[0].get_tokenizer().apply_chat_template(
        [{"role": "system", "content": DEFAULT_SYSTEM},
         {"role": "user", "content": "What is 0 plus 1?"}], add_generation_prompt=True)))


def test_sampling_parameters_seeds_and_engine_arguments_reach_vllm(fake_vllm, addition):
    collect(str(addition), **{**BASE, "samples": 3, "temperature": 0.6, "top_p": 0.9, "seed": 5},
            max_num_seqs=256, dtype="bfloat16", revision="abc123")
    init = fake_vllm.instances[0].init_kwargs
    assert init["disable_log_stats"] is False  # else vLLM returns no request metrics
    assert (init["seed"], init["max_num_seqs"], init["dtype"], init["revision"]) == (
        5, 256, "bfloat16", "abc123")
    assert init["max_model_len"] is None  # unset options keep vLLM's defaults
    params = fake_vllm.params
    assert len(params) == 12 and {(p.n, p.temperature, p.top_p) for p in params} == {(3, 0.6, 0.9)}
    qids = [f"addition/{i}" for i in range(12)]
    assert [p.seed for p in params] == [query_seed(5, q) for q in qids]
    assert fake_vllm.calls == 3  # chunks of 5 problems: 5 + 5 + 2


def test_truncation_at_the_cap_is_flagged_and_graded_wrong(fake_vllm, addition):
    res = collect(str(addition), **BASE)
    ts = res.trace_set
    rows = sidecar(res)
    flat = [s for r in rows for s in r["samples"]]
    truncated = np.array([s["finish_reason"] == "length" for s in flat])
    assert 0 < truncated.sum() < len(flat)
    assert np.array_equal(ts.sample_truncated, truncated)
    assert np.all(ts.sample_tokens[truncated] == 40)
    assert not ts.sample_correct[truncated].any()
    assert np.all(ts.max_tokens == 40)


def test_cap_is_fitted_to_the_context_window(fake_vllm, addition):
    fake_vllm.max_model_len = 60  # prompts are ~20 tokens: room for ~40, not 4096
    res = collect(str(addition), **{**BASE, "max_tokens": 4096})
    ts = res.trace_set
    assert np.all(ts.max_tokens == 60 - ts.prompt_tokens)
    assert {p.max_tokens for p in fake_vllm.params} == {int(60 - ts.prompt_tokens[0])}
    assert res.trace_set.meta["max_model_len"] == 60


def test_grading_matches_what_the_model_answered(fake_vllm, addition):
    res = collect(str(addition), **BASE)
    expected = expected_samples(fake_vllm)
    ts = res.trace_set
    for i, qid in enumerate(ts.query_id):
        truth = 3 * i + 1
        for k in range(4):
            _, text, reason = expected[query_seed(0, qid) + k]
            want = reason == "stop" and f"\\boxed{{{truth}}}" in text
            assert bool(ts.sample_correct[ts.offsets[i] + k]) == want
    answers = [s["answer"] for r in sidecar(res) for s in r["samples"] if s["finish_reason"] == "stop"]
    assert answers and all(a.isdigit() for a in answers)
    assert 0.2 < ts.sample_correct.mean() < 0.8


def test_math_grader_end_to_end(fake_vllm, addition):
    pytest.importorskip("math_verify")
    numeric = collect(str(addition), **{**BASE, "name": "n"})
    math = collect(str(addition), **{**BASE, "grader": "math", "name": "m"})
    assert np.array_equal(numeric.trace_set.sample_correct, math.trace_set.sample_correct)
    assert "math-verify" in math.trace_set.meta["grader"]["detail"]


def test_output_is_a_registered_trace_set_with_provenance(fake_vllm, addition):
    res = collect(str(addition), **BASE, name="qwen-add")
    assert res.trace_path == user_dir() / "qwen-add.parquet"
    ts = load_trace_set("qwen-add")  # `clearsim traces show NAME` finds it by name
    meta = ts.meta
    assert meta["model"] == "fake/Math-7B" and meta["vllm_version"] == FAKE_VERSION
    assert meta["sampling"] == {**meta["sampling"], "n": 4, "temperature": 0.7, "top_p": 0.8,
                                "max_tokens": 40, "seed": 0}
    assert meta["problems"]["name"] == "addition" and len(meta["problems"]["sha256"]) == 64
    assert meta["problems"]["n"] == 12 and len(meta["problems"]["content_sha256"]) == 64
    assert meta["grader"]["name"] == "numeric"
    assert meta["system_prompt"] == DEFAULT_SYSTEM and "\\boxed{}" in meta["system_prompt"]
    assert "gpu" in meta and "device_name" in meta["gpu"]
    assert meta["date"].endswith("Z") and meta["finished_at"] >= meta["date"]
    assert meta["recorded_by"] == "clearsim traces collect" and len(meta["sessions"]) == 1
    assert meta["sidecar"] == "qwen-add.samples.jsonl" and meta["serving"] == "qwen-add.serving"
    assert list(ts.dataset) == ["addition"] * 12 and ts.level[0] == -1
    assert not (user_dir() / "qwen-add.collect").exists()  # checkpoint gone once written
    text = res.samples_path.read_text()
    assert "What is" not in text and "two words" not in text  # no problem or completion text


def test_default_name_follows_the_embedded_convention(fake_vllm, addition):
    res = collect(str(addition), **BASE)
    assert res.name == "math-7b_addition_t0.7_k4"


def test_out_path_decides_where_everything_goes(fake_vllm, addition, tmp_path):
    res = collect(str(addition), **BASE, out=tmp_path / "elsewhere" / "run1.parquet")
    assert res.name == "run1" and res.trace_path.is_file()
    assert res.samples_path == tmp_path / "elsewhere" / "run1.samples.jsonl"
    assert (tmp_path / "elsewhere" / "run1.serving" / "session-01" / "meta.json").is_file()


# ---------------------------------------------------------------- calibration
REQUEST_KEYS = {"request_id", "input_toks", "output_toks", "arrival_time", "queued_ts",
                "scheduled_ts", "first_token_ts", "last_token_ts"}
META_KEYS = {"schema_version", "model", "vllm_version", "engine_kwargs", "dataset_path",
             "dataset_hash", "num_requests", "started_at", "finished_at", "tick_seconds"}


def test_calibration_files_have_the_recorded_runs_layout(fake_vllm, addition):
    fake_vllm.delay = 0.12  # long enough for the load sampler to tick
    res = collect(str(addition), **BASE, max_num_seqs=256)
    run = res.serving_dir / "session-01"
    rows = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["request_id"] for r in rows} == set(res.trace_set.query_id)
    for r in rows:
        assert REQUEST_KEYS <= set(r) and r["n"] == 4
        assert r["queued_ts"] <= r["scheduled_ts"] <= r["first_token_ts"] <= r["last_token_ts"]
        assert r["input_toks"] == res.trace_set.prompt_tokens[0]
    with (run / "timeseries.csv").open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["t", "prompt_throughput", "gen_throughput", "running", "waiting",
                        "kv_cache_pct"]
    ticks = table[1:]
    assert len(ticks) >= 3
    assert {(row[3], row[4], row[5]) for row in ticks} == {("3", "1", "25.0")}
    assert sum(float(row[2]) for row in ticks) > 0
    meta = json.loads((run / "meta.json").read_text())
    assert META_KEYS <= set(meta) and meta["num_requests"] == 12
    assert meta["engine_kwargs"]["max_num_seqs"] == 256 and meta["vllm_version"] == FAKE_VERSION
    assert meta["timeseries_source"].endswith("sampled") and "hardware" in meta


def test_calibration_files_match_a_shared_recorded_run(fake_vllm, addition, shared_data):
    recorded = shared_data / "serving" / "vllm_runs" / "RTX4090_Llama-3.1-8B_tp1"
    res = collect(str(addition), **BASE)
    run = res.serving_dir / "session-01"
    ours = json.loads((run / "requests.jsonl").read_text().splitlines()[0])
    theirs = json.loads((recorded / "requests.jsonl").read_text().splitlines()[0])
    assert set(theirs) <= set(ours)
    assert all(type(ours[k]) is type(theirs[k]) for k in theirs)
    header = lambda p: p.read_text().splitlines()[0]  # noqa: E731
    assert header(run / "timeseries.csv") == header(recorded / "timeseries.csv")
    their_meta = json.loads((recorded / "meta.json").read_text())
    our_meta = json.loads((run / "meta.json").read_text())
    assert set(their_meta) - {"kv_cache", "resolved_config"} <= set(our_meta)


# --------------------------------------------------------------------- resume
def test_resume_after_a_crash_records_every_sample_exactly_once(fake_vllm, addition, tmp_path):
    fake_vllm.fail_on_call = 2  # the second chunk dies on the GPU
    with pytest.raises(RuntimeError, match="CUDA error"):
        collect(str(addition), **BASE, name="run")
    work = user_dir() / "run.collect"
    assert len((work / "queries.jsonl").read_text().splitlines()) == 5
    assert not (user_dir() / "run.parquet").exists()

    fake_vllm.fail_on_call = None
    res = collect(str(addition), **BASE, name="run")
    assert (res.resumed, res.generated) == (5, 7)
    seeds = [seed for _, seed, _ in fake_vllm.generated]
    assert len(seeds) == 48 and len(set(seeds)) == 48  # 12 queries x 4 samples, each once
    assert len(res.trace_set.meta["sessions"]) == 2
    assert sorted(p.name for p in res.serving_dir.iterdir()) == ["session-01", "session-02"]

    clean = collect(str(addition), **BASE, out=tmp_path / "clean.parquet")
    for col in ("query_id", "prompt_tokens", "max_tokens", "offsets", "sample_tokens",
                "sample_correct", "sample_truncated"):
        assert np.array_equal(getattr(res.trace_set, col), getattr(clean.trace_set, col)), col
    on_disk = TraceSet.read(res.trace_path)
    assert np.array_equal(on_disk.sample_tokens, res.trace_set.sample_tokens)


def test_a_line_torn_by_the_crash_is_dropped(fake_vllm, addition):
    fake_vllm.fail_on_call = 2
    with pytest.raises(RuntimeError):
        collect(str(addition), **BASE, name="run")
    queries = user_dir() / "run.collect" / "queries.jsonl"
    lines = queries.read_text().splitlines(keepends=True)
    queries.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])  # half a line
    fake_vllm.fail_on_call = None
    res = collect(str(addition), **BASE, name="run")
    assert (res.resumed, res.generated) == (4, 8)
    assert res.trace_set.n_queries == 12 and len(res.trace_set.sample_tokens) == 48


def test_rerun_with_other_arguments_is_refused_until_restart(fake_vllm, addition):
    fake_vllm.fail_on_call = 2
    with pytest.raises(RuntimeError):
        collect(str(addition), **BASE, name="run")
    fake_vllm.fail_on_call = None
    with pytest.raises(UserError) as e:
        collect(str(addition), **{**BASE, "temperature": 1.0}, name="run")
    assert "temperature: 0.7 in the checkpoint, 1.0 now" in str(e.value)
    assert "--restart" in str(e.value)
    res = collect(str(addition), **{**BASE, "temperature": 1.0}, name="run", restart=True)
    assert (res.resumed, res.generated) == (0, 12)
    assert sorted(p.name for p in res.serving_dir.iterdir()) == ["session-01"]


def test_a_finished_trace_is_not_overwritten_without_restart(fake_vllm, addition):
    collect(str(addition), **BASE, name="done")
    with pytest.raises(UserError, match="already there.*--restart"):
        collect(str(addition), **BASE, name="done")
    assert collect(str(addition), **BASE, name="done", restart=True).generated == 12


def test_problems_changed_under_a_checkpoint_are_detected(fake_vllm, addition):
    fake_vllm.fail_on_call = 2
    with pytest.raises(RuntimeError):
        collect(str(addition), **BASE, name="run")
    write_addition_problems(addition, 13)
    fake_vllm.fail_on_call = None
    with pytest.raises(UserError, match="problems_sha256"):
        collect(str(addition), **BASE, name="run")


# ---------------------------------------------------------------- bad input
def test_missing_vllm_says_what_to_install(monkeypatch, addition):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError) as e:
        collect(str(addition), **BASE)
    assert "clearsim[collect]" in str(e.value) and "--endpoint" in str(e.value)
    assert not user_dir().exists()  # nothing written before the check


@pytest.mark.parametrize(
    "override, flag",
    [
        ({"samples": 0}, "--samples"),
        ({"samples": 2.5}, "--samples"),
        ({"max_tokens": -1}, "--max-tokens"),
        ({"chunk_size": 0}, "--chunk-size"),
        ({"temperature": -0.1}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"seed": -3}, "--seed"),
        ({"model": None}, "--model"),
        ({"out": "trace.csv"}, "--out"),
        ({"name": "bad/name"}, "--name"),
        ({"gpu": "H100"}, "--gpu"),
        ({"max_num_seqs": 0}, "--max-num-seqs"),
        ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization"),
        ({"tick_seconds": 0}, "--tick-seconds"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(monkeypatch, addition, override, flag):
    monkeypatch.setitem(sys.modules, "vllm", None)  # reaching vLLM would be a different error
    with pytest.raises(UserError) as e:
        collect(str(addition), **{**BASE, **override})
    assert f"field '{flag}'" in str(e.value)
