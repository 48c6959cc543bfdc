"""bench.json: ``vllm bench serve``'s flat result layout, from a simulated run and from a
recorded vLLM run through the same function, so the two can be diffed key by key."""

import json

import numpy as np
import pandas as pd
import pytest

from sim.experiments.runner import run
from sim.experiments.vllm_bench import bench_result, recorded_frame

# Names as vllm/benchmarks/serve.py (vLLM 0.32) writes them into its result JSON.
INT_KEYS = {"completed", "total_input_tokens", "total_output_tokens"}
FLOAT_KEYS = {"duration", "request_throughput", "output_throughput", "total_token_throughput"} | {
    f"{s}_{m}_ms" for s in ("mean", "median", "std", "p90", "p99") for m in ("ttft", "tpot", "e2el")}


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "r"
    run("default", out=out, queries=300)
    return (json.loads((out / "bench.json").read_text()), json.loads((out / "summary.json").read_text()),
            pd.read_parquet(out / "queries.parquet"))


def _check_layout(res: dict) -> None:
    assert set(res) == INT_KEYS | FLOAT_KEYS
    assert all(type(res[k]) is int for k in INT_KEYS)
    assert all(type(res[k]) is float and np.isfinite(res[k]) for k in FLOAT_KEYS)


def test_simulated_bench_json_matches_summary_and_queries(sim_run):
    bench, summary, q = sim_run
    assert set(bench) == {r["policy"] for r in summary["results"]}
    for r in summary["results"]:
        b = bench[r["policy"]]
        _check_layout(b)
        g = q[(q["policy"] == r["policy"]) & ~q["abandoned"]]
        assert b["completed"] == r["n_served"] == len(g)
        assert b["total_output_tokens"] == r["tokens_generated"] == int(g["tokens_generated"].sum())
        assert b["total_input_tokens"] == int(g["prompt_tokens"].sum())
        e2el = (g["finish_s"] - g["arrival_s"]).to_numpy() * 1000
        ttft = (g["first_token_s"] - g["arrival_s"]).to_numpy() * 1000
        assert b["mean_e2el_ms"] == pytest.approx(r["e2el_ms"]["mean"], rel=1e-12)
        assert b["p99_e2el_ms"] == pytest.approx(r["e2el_ms"]["p99"], rel=1e-12)
        assert b["median_ttft_ms"] == pytest.approx(r["ttft_ms"]["median"], rel=1e-12)
        assert b["std_e2el_ms"] == pytest.approx(np.std(e2el), rel=1e-12)
        assert b["std_ttft_ms"] == pytest.approx(np.std(ttft), rel=1e-12)
        assert b["output_throughput"] == pytest.approx(b["total_output_tokens"] / b["duration"])


def test_recorded_run_has_the_same_layout_and_direct_values(shared_data, sim_run):
    path = shared_data / "serving" / "vllm_runs" / "RTX4090_Llama-3.1-8B_tp1" / "requests.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    res = bench_result(recorded_frame(path))
    _check_layout(res)
    sim = next(iter(sim_run[0].values()))
    assert set(res) == set(sim) and {k: type(v) for k, v in res.items()} == {
        k: type(v) for k, v in sim.items()}
    assert res["completed"] == len(rows)
    assert res["total_input_tokens"] == sum(r["input_toks"] for r in rows)
    assert res["total_output_tokens"] == sum(r["output_toks"] for r in rows)
    ttft = np.array([r["first_token_ts"] - r["queued_ts"] for r in rows]) * 1000
    assert res["p99_ttft_ms"] == pytest.approx(np.percentile(ttft, 99), rel=1e-12)
    tpot = [(r["last_token_ts"] - r["first_token_ts"]) / (r["output_toks"] - 1) if r["output_toks"] > 1
            else 0.0 for r in rows]
    assert res["mean_tpot_ms"] == pytest.approx(np.mean(tpot) * 1000, rel=1e-12)
