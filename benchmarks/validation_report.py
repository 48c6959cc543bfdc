"""Regenerate the tables of docs/validation.md: calibration against every recorded vLLM run,
one out-of-sample cross-check, and the queueing-theory estimates.

    python benchmarks/validation_report.py ../shared/data/serving/vllm_runs > /tmp/tables.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "validation"))

# Runs whose meta.json lacks the KV size but whose card, model and vLLM version match a run
# that records it: the earlier RTX 4090 run (same 24 GB card, Llama-3.1-8B, vLLM 0.19.0,
# gpu_memory_utilization default 0.9) gets the newer run's 2,588 blocks.
KV_FROM_SIBLING = {"RTX4090_Llama-3.1-8B_tp1_earlier-run_maxseqs128": 2588}


def calibration(root: Path) -> str:
    from sim.calibrate import calibrate, compare, cross_check, initial_fit, load_run

    out = ["| run | flags | c0 ms | c1 us/tok | c2 us/seq | TTFT mean / p50 / p90 | TPOT mean / p50 / p90 "
           "| E2E mean / p50 / p90 | stage-1 only: E2E p50, TPOT mean | target |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for d in sorted(p for p in root.iterdir() if (p / "requests.jsonl").is_file()):
        res = calibrate(d, kv_blocks=KV_FROM_SIBLING.get(d.name))
        err = {(r["metric"], r["stat"]): r["error"] for r in res["rows"]}
        run = load_run(d, KV_FROM_SIBLING.get(d.name))
        s1 = {(r["metric"], r["stat"]): r["error"] for r in compare(run, initial_fit(run))["rows"]}
        fl = res["flags"]
        flags = (f"seqs {fl['max_num_seqs']}, tokens {fl['max_num_batched_tokens']}, "
                 f"DP {fl['replicas']}, KV {fl['kv_blocks'] or 'unl.'}")
        trip = lambda m: " / ".join(f"{err[(m, s)]:+.1%}" for s in ("mean", "median", "p90"))
        f = res["fitted"]
        out.append(f"| {d.name} | {flags} | {f['c0_us'] / 1000:.2f} | {f['c1_us']:.1f} | {f['c2_us']:.1f} | "
                   f"{trip('ttft')} | {trip('tpot')} | {trip('e2e')} | "
                   f"{s1[('e2e', 'median')]:+.1%}, {s1[('tpot', 'mean')]:+.1%} | "
                   f"{'met' if res['target']['within_15pct'] else 'NOT met'} |")
    a = root / "RTX4090_Llama-3.1-8B_tp1"
    b = root / "RTX4090_Llama-3.1-8B_tp1_earlier-run_maxseqs128"
    cc = cross_check(a, b, test_kv_blocks=KV_FROM_SIBLING[b.name])
    real = {(r["metric"], r["stat"]): r["error"] for r in cc["rows"]}
    lines = [f"{m} mean {real[(m, 'mean')]:+.1%}, median {real[(m, 'median')]:+.1%}"
             for m in ("ttft", "tpot", "e2e")]
    out.append("")
    out.append(f"Out of sample: coefficients fitted on {a.name} (max_num_seqs 256), replayed on "
               f"{b.name} (max_num_seqs 128, KV 2,588 blocks): " + "; ".join(lines) + ".")
    return "\n".join(out)


def queueing() -> str:
    from queueing import (
        cfg_for,
        combined_estimate,
        erlang_c_wait,
        fcfs_waits,
        run_queue,
    )

    c0, p = 0.01, 0.01
    es, es2 = c0 / p, c0 ** 2 * (2 - p) / p ** 2
    rows = ["| case | closed form | estimate (99% CI) | error |", "|---|---|---|---|"]

    def est(draw, cfg, c, seeds=6, n=10_000, extra=80):
        eng, same, more = [], [], []
        for s in range(seeds):
            arr, g = draw(np.random.default_rng(s), n)
            rec, _ = run_queue(arr, g, cfg)
            eng.append(np.mean(rec.scheduled_s - arr))
            same.append(np.mean(fcfs_waits(arr, g * c0, c)))
        for s in range(10_000, 10_000 + extra):
            arr, g = draw(np.random.default_rng(s), n)
            more.append(np.mean(fcfs_waits(arr, g * c0, c)))
        return combined_estimate(eng, same, more)

    cases = [
        ("M/D/1, rho 0.5, D = 1 s: mean wait", 0.5 * 1.0 / (2 * 0.5),
         lambda r, n: (np.cumsum(r.exponential(2.0, n)), np.full(n, 100)), cfg_for(c0), 1, 60),
        ("M/G/1 (geometric tokens), rho 0.5: mean wait", 0.5 * es2 / (2 * 0.5),
         lambda r, n: (np.cumsum(r.exponential(2.0, n)), r.geometric(p, n)), cfg_for(c0), 1, 80),
        ("M/M/4-like (4 replicas, least-loaded), rho 0.6: mean wait", erlang_c_wait(2.4, es, 4),
         lambda r, n: (np.cumsum(r.exponential(1 / 2.4, n)), r.geometric(p, n)),
         cfg_for(c0, replicas=4, routing="least-loaded"), 4, 120),
    ]
    for name, theory, draw, cfg, c, extra in cases:
        m, h = est(draw, cfg, c, extra=extra)
        rows.append(f"| {name} | {theory * 1000:.1f} ms | {m * 1000:.1f} +- {h * 1000:.1f} ms | "
                    f"{(m - theory) / theory:+.2%} |")
    return "\n".join(rows)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/serving/vllm_runs")
    print(calibration(root))
    print()
    print(queueing())
