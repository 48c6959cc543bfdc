"""How fast ``clearsim traces synth`` draws and writes a million synthetic queries.

Prints the absolute time (the issue's target: 1,000,000 queries well under 30 s) and its ratio
to an in-process baseline doing the irreducible work: drawing the same number of gamma and
uniform variates with numpy and writing a Parquet table of the same shape with pyarrow.  A
ratio near 1-3 means synth adds little beyond drawing and writing.

    python benchmarks/synth.py [--queries N] [--like NAME]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traces.api import synth  # noqa: E402
from traces.registry import load_trace_set  # noqa: E402


def baseline(n_queries: int, n_samples: int, out: Path) -> float:
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    g = rng.gamma(2.0, 100.0, n_samples)
    u = rng.random(n_samples) < 0.5
    offsets = np.linspace(0, n_samples, n_queries + 1).astype(np.int32)
    table = pa.table({
        "query_id": pa.array([f"q/{i}" for i in range(n_queries)]),
        "prompt_tokens": pa.array(rng.integers(10, 200, n_queries).astype(np.int32)),
        "sample_tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(g.astype(np.int32))),
        "sample_correct": pa.ListArray.from_arrays(pa.array(offsets), pa.array(u)),
    })
    pq.write_table(table, out, compression="zstd")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--like", default="qwen25-math-instruct_math100_t0.7_k8")
    args = ap.parse_args()
    like = load_trace_set(args.like)
    n_samples = int(round(args.queries * like.samples_per_query.mean()))
    with tempfile.TemporaryDirectory() as tmp:
        base = baseline(args.queries, n_samples, Path(tmp) / "base.parquet")
        t0 = time.perf_counter()
        synth(args.queries, args.like, Path(tmp) / "synth.parquet")
        took = time.perf_counter() - t0
    print(f"synth {args.queries:,} queries like {args.like} (~{n_samples:,} samples): "
          f"{took:.2f} s; baseline (draw + write the same shape) {base:.2f} s; ratio {took / base:.2f}")


if __name__ == "__main__":
    main()
