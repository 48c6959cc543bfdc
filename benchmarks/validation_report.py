"""Regenerate the tables of docs/validation.md: calibration against every recorded vLLM run
(the shared GPU runs, then the CPU runs shipped in sim/calibration_data/cpu_runs),
the out-of-sample table (GPU pair both ways, CPU runs fit at one load), and the queueing-theory
estimates.

    python benchmarks/validation_report.py ../shared/data/serving/vllm_runs > /tmp/tables.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "validation"))

# No KV size is typed in any more: a run that does not record it has it inferred from its own
# time series (sim/experiments/kv_infer.py).
KV_FROM_SIBLING: dict[str, int] = {}
CPU_RUNS = Path(__file__).resolve().parents[1] / "sim" / "calibration_data" / "cpu_runs"


def calibration(root: Path) -> str:
    from sim.experiments.calibrate import calibrate, compare, cross_check, initial_fit, load_run

    out = ["| run | flags | c0 ms | c1 us/tok | c2 us/seq | TTFT mean / p50 / p90 | TPOT mean / p50 / p90 "
           "| E2E mean / p50 / p90 | stage-1 only: E2E p50, TPOT mean | target |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    runs = lambda folder: sorted(p for p in folder.iterdir() if (p / "requests.jsonl").is_file())
    for d in runs(root) + (runs(CPU_RUNS) if CPU_RUNS.is_dir() else []):
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
    return "\n".join(out)


def out_of_sample_pairs(root: Path) -> list[tuple[list[Path], list[Path]]]:
    """The GPU pair both ways; each CPU model fitted at one load and checked at the others,
    then fitted at its lowest and highest load and checked at the middle one."""
    a, b = root / "RTX4090_Llama-3.1-8B_tp1", root / "RTX4090_Llama-3.1-8B_tp1_earlier-run_maxseqs128"
    pairs = [([a], [b]), ([b], [a])]
    if CPU_RUNS.is_dir():
        groups: dict[str, list[Path]] = {}
        for d in sorted(p for p in CPU_RUNS.iterdir() if (p / "requests.jsonl").is_file()):
            groups.setdefault(d.name.rsplit("_r", 1)[0], []).append(d)
        for runs in groups.values():
            runs.sort(key=lambda p: float(p.name.rsplit("_r", 1)[1]))
            for i, fit_run in enumerate(runs):
                pairs.append(([fit_run], runs[:i] + runs[i + 1:]))
        for runs in groups.values():
            if len(runs) == 3:
                pairs.append(([runs[0], runs[2]], [runs[1]]))
    return pairs


def out_of_sample_table(root: Path, max_evals: int = 120) -> str:
    from sim.experiments.calibrate import out_of_sample

    out = ["| fit on | check on | KV of the check run | fitted c0 ms / c1 us / c2 us / overhead ms "
           "| TTFT mean / p50 | TPOT mean / p50 | E2E mean / p50 / p90 | target (E2E p50, TPOT mean) |",
           "|---|---|---|---|---|---|---|---|"]
    for fits, checks in out_of_sample_pairs(root):
        res = out_of_sample(fits, checks, max_evals=max_evals)
        f = res["fitted"]
        for c in res["checks"]:
            err = {(r["metric"], r["stat"]): r["error"] for r in c["rows"]}
            fmt = lambda m, ss: " / ".join(f"{err[(m, s)]:+.1%}" for s in ss)
            kv = f"{c['flags']['kv_blocks'] or 'unl.'} ({c['flags']['kv_source']})"
            out.append(f"| {', '.join(res['fit_on'])} | {c['run']} | {kv} | "
                       f"{f['c0_us'] / 1000:.2f} / {f['c1_us']:.0f} / {f['c2_us']:.0f} / "
                       f"{f['overhead_ms']:.1f} | {fmt('ttft', ('mean', 'median'))} | "
                       f"{fmt('tpot', ('mean', 'median'))} | {fmt('e2e', ('mean', 'median', 'p90'))} | "
                       f"{'met' if c['target']['within_10pct'] else 'NOT met'} "
                       f"({err[('e2e', 'median')]:+.1%}, {err[('tpot', 'mean')]:+.1%}) |")
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
    print(out_of_sample_table(root))
    print()
    print(queueing())
