"""Sweep throughput: Dask workers (and a process pool) against the serial executor, one process.

    python benchmarks/sweep.py [--cells 40] [--queries 6000] [--workers 2] [--repeat 2] [--json]

Runs the same 40-cell sweep (the default scenario over 40 budgets, one seed, three policies)
with ``--executor local`` and then on ``dask-local:N`` and ``processes:N``, each into a fresh
folder, and reports cells per second and the speed-up over serial.  Two Dask figures:
``dask_speedup`` counts everything a user waits for (LocalCluster start-up included),
``dask_warm_speedup`` reuses a cluster started beforehand (the throughput of the workers).  The
rows are checked to be identical across executors.  Target on 2 cores: dask >= 1.7x serial.
Timings on a shared machine are provisional: the ratio is what matters.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sweep_spec(cells: int, queries: int) -> dict:
    budgets = [int(b) for b in (100 + 25 * k for k in range(cells))]
    return {"name": "bench", "base": "default", "grid": {"budget": budgets}, "seeds": [0],
            "set": {"arrivals.queries": queries}}


def timed(spec: dict, out: Path, executor) -> tuple[float, object]:
    from sim.experiments.sweep import sweep

    t0 = time.perf_counter()
    res = sweep(spec, out=out, executor=executor, progress=False, report=False)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=40)
    ap.add_argument("--queries", type=int, default=6000, help="queries per run (sets cell cost)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds; best time of each")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from sim.experiments.executors import DaskExecutor, parse_executor

    spec = sweep_spec(args.cells, args.queries)
    n = args.workers
    best = {"serial": float("inf"), "dask": float("inf"), "warm": float("inf"), "proc": float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeat):  # interleaved rounds; the best of each resists a busy CPU
            t, serial = timed(spec, tmp / f"serial{r}", "local")
            best["serial"] = min(best["serial"], t)
            t, dask = timed(spec, tmp / f"dask{r}", f"dask-local:{n}")
            best["dask"] = min(best["dask"], t)
            with DaskExecutor(parse_executor(f"dask-local:{n}")) as ex:
                ex.client.run(lambda: __import__("sim.experiments.sweep"))  # workers import clearsim first
                t, warm = timed(spec, tmp / f"warm{r}", ex)
            best["warm"] = min(best["warm"], t)
            t, proc = timed(spec, tmp / f"proc{r}", f"processes:{n}")
            best["proc"] = min(best["proc"], t)
            for other in (dask, warm, proc):
                assert other.results.equals(serial.results), "executors disagree"
    t_serial, t_dask, t_warm, t_proc = best["serial"], best["dask"], best["warm"], best["proc"]
    out = {
        "cells": args.cells, "queries_per_run": args.queries, "workers": n, "rounds": args.repeat,
        "serial_s": round(t_serial, 3), "dask_s": round(t_dask, 3), "dask_warm_s": round(t_warm, 3),
        "processes_s": round(t_proc, 3),
        "serial_cells_per_s": round(args.cells / t_serial, 3),
        "dask_speedup": round(t_serial / t_dask, 3),
        "dask_warm_speedup": round(t_serial / t_warm, 3),
        "processes_speedup": round(t_serial / t_proc, 3),
        "target_dask_speedup": 1.7,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:22s} {v}")


if __name__ == "__main__":
    main()
