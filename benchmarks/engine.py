"""Engine speed: the full pipeline against a bare SimPy M/M/1 loop in the same process.

    python benchmarks/engine.py --queries 1000000 --json

``queries_per_second``: simulated queries per wall-clock second of :func:`sim.runner.simulate`
on the default traces with Poisson arrivals, the ``clear-windowed`` policy and one replica at
about 70% load (offered tokens per second = 0.7 x the preset's decode throughput at a full
batch), everything included: workload building, allocation, the engine, metrics and the
queries table.  ``simpy_baseline_queries_per_second``: the same number of customers through
the textbook SimPy M/M/1 loop (a source process, a ``Resource`` and one process per customer)
at 70% load.  Their ratio is what matters (machines differ); targets: >= 50,000 queries/s,
within 2x of the bare loop, peak memory under 2 GB for 1,000,000 queries.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import simpy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pipeline_rate(n: int, budget: float = 250.0, load: float = 0.7, seed: int = 0) -> dict:
    from sim.presets import presets
    from sim.runner import resolve, simulate

    pre = presets()["qwen2.5-math-7b-h100"]
    seqs = 256
    step_s = (pre["c0_us"] + pre["c2_us"] * seqs) * 1e-6
    rate = load * (seqs / step_s) / budget
    sc = resolve("default", seed=seed, policies="clear-windowed", budget=budget, rate=rate, queries=n)
    sc["engine"]["max_num_seqs"] = seqs
    t0 = time.perf_counter()
    res = simulate(sc)
    wall = time.perf_counter() - t0
    r = res.summary["results"][0]
    return {"wall_s": wall, "rate": rate, "gpu_utilisation": r["gpu_utilisation"],
            "mean_running": r["mean_running"], "e2el_median_ms": r["e2el_ms"]["median"],
            "rows": len(res.queries)}


def simpy_mm1(n: int, load: float = 0.7, seed: int = 0) -> float:
    """Wall seconds of a bare SimPy M/M/1 queue serving ``n`` customers."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0, n).tolist()
    service = rng.exponential(load, n).tolist()
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=1)
    done = [0]

    def customer(s):
        with server.request() as req:
            yield req
            yield env.timeout(s)
        done[0] += 1

    def source():
        for g, s in zip(gaps, service):
            yield env.timeout(g)
            env.process(customer(s))

    t0 = time.perf_counter()
    env.process(source())
    env.run()
    wall = time.perf_counter() - t0
    assert done[0] == n
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=200_000, help="simulated queries (default 200000)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    pipe = pipeline_rate(args.queries)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = simpy_mm1(args.queries)
    out = {
        "queries": args.queries,
        "queries_per_second": args.queries / pipe["wall_s"],
        "simpy_baseline_queries_per_second": args.queries / base,
        "slowdown_vs_simpy": pipe["wall_s"] / base,
        "pipeline_wall_s": pipe["wall_s"],
        "simpy_baseline_wall_s": base,
        "peak_rss_mb_after_pipeline": peak_mb,
        "arrival_rate": pipe["rate"],
        "gpu_utilisation": pipe["gpu_utilisation"],
        "mean_running": pipe["mean_running"],
        "e2el_median_ms": pipe["e2el_median_ms"],
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:32s} {v:,.3f}" if isinstance(v, float) else f"{k:32s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
