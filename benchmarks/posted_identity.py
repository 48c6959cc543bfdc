"""Byte-identity cases for ``clear-posted``: run folders to compare before and after a change.

    python benchmarks/posted_identity.py OUT            # write the 35 run folders into OUT/
    python benchmarks/posted_identity.py OUT --check REF  # write them, then compare with REF/

Speed work on ``clear-posted`` (``policies/sliding_market.py``, ``policies/clear_posted.py``, the
runner's per-arrival path) must not change a single result.  Write the folders with the tree
before the change (e.g. a ``git worktree`` of the old commit, run with its own checkout first on
``sys.path``), then with the new one and ``--check``: every file (queries.parquet,
timeseries.parquet, summary.json, bench.json, scenario.yaml; no report.html) is compared byte
for byte.  The cases cover scarce and ample budgets, ``leftover`` spread / next-in-line / none,
``history`` 1 to 500, ``horizon``, ``b_max``, a fixed ``beta``, oracle / noisy predictors, fitted
outcomes, 1-16 replicas, least-loaded routing, token-rate budgets, the paper streams, replayed
arrivals and the reasoning sets with hard caps and forced answers (docs/clear.md, Speed).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def pol(**kw) -> list[dict]:
    """A scenario's policies: clear-posted alone, with these parameters."""
    return [{"name": "clear-posted", **kw}]


#: name: (scenario, run() keyword arguments, --set overrides)
CASES = {
 "d-spread":        ("default", dict(queries=3000), {"policies": pol()}),
 "d-nil":           ("default", dict(queries=3000), {"policies": pol(leftover="next-in-line")}),
 "d-none":          ("default", dict(queries=3000), {"policies": pol(leftover="none")}),
 "d-ample-spread":  ("default", dict(queries=3000, budget=2000), {"policies": pol()}),
 "d-ample-nil":     ("default", dict(queries=3000, budget=2000), {"policies": pol(leftover="next-in-line")}),
 "d-ample-none":    ("default", dict(queries=3000, budget=1200), {"policies": pol(leftover="none")}),
 "d-scarce-none":   ("default", dict(queries=3000, budget=60), {"policies": pol(leftover="none")}),
 "d-scarce-spread": ("default", dict(queries=3000, budget=90, seed=5), {"policies": pol()}),
 "d-h1-spread":     ("default", dict(queries=3000), {"policies": pol(history=1)}),
 "d-h1-nil":        ("default", dict(queries=3000, budget=600), {"policies": pol(history=1, leftover="next-in-line")}),
 "d-h7-nil":        ("default", dict(queries=3000), {"policies": pol(history=7, leftover="next-in-line")}),
 "d-h7-spread-ample": ("default", dict(queries=3000, budget=900), {"policies": pol(history=7)}),
 "d-h7-none":       ("default", dict(queries=3000, seed=3), {"policies": pol(history=7, leftover="none")}),
 "d-horizon50":     ("default", dict(queries=3000), {"policies": pol(horizon=50)}),
 "d-h100-hz2000":   ("default", dict(queries=3000, seed=1), {"policies": pol(history=100, horizon=2000)}),
 "d-beta":          ("default", dict(queries=3000), {"policies": pol(beta=0.01, b_max=1024)}),
 "d-bmax300":       ("default", dict(queries=3000, budget=200), {"policies": pol(b_max=300)}),
 "d-oracle":        ("default", dict(queries=3000, seed=2), {"policies": pol(), "predictor.kind": "oracle"}),
 "d-rep4":          ("default", dict(queries=4000, rate=150), {"policies": pol(), "engine.replicas": 4}),
 "d-rep4-ll":       ("default", dict(queries=4000, rate=150), {"policies": pol(leftover="next-in-line"), "engine.replicas": 4, "engine.routing": "least-loaded"}),
 "d-util":          ("default", dict(queries=3000), {"policies": pol(), "budget_utilisation": 0.5}),
 "d-util-rep4":     ("default", dict(queries=4000, rate=150), {"policies": pol(leftover="none"), "budget_utilisation": 0.8, "engine.replicas": 4}),
 "ovb":             ("online-vs-batch", dict(queries=3000, seed=4), {"policies": pol()}),
 "balanced":        ("paper-balanced", dict(seed=1), {"policies": pol()}),
 "mostlyhard":      ("paper-mostlyhard", dict(seed=2, budget=150), {"policies": pol(leftover="next-in-line")}),
 "ushaped":         ("paper-ushaped", dict(seed=0, budget=800), {"policies": pol(history=7)}),
 "burst":           ("burst-stress", dict(queries=3000), {"policies": pol()}),
 "azure":           ("azure-conv-replay", dict(queries=3000), {"policies": pol(leftover="none")}),
 "reasoning":       ("reasoning-7b", dict(queries=1500), {"policies": pol(b_max=32768)}),
 "reasoning-util":  ("reasoning-7b", dict(queries=1500, seed=3), {"policies": pol(b_max=32768, leftover="next-in-line"), "budget_utilisation": 0.6}),
 "reasoning-forced": ("reasoning-7b-forced", dict(queries=800), {"policies": pol(b_max=32768)}),
 "d-fitted":        ("default", dict(queries=3000, seed=6), {"policies": pol(leftover="next-in-line"), "traces.outcomes": "fitted"}),
 "d-rep2-ll-forced": ("reasoning-7b-forced", dict(queries=800, rate=4, seed=2), {"policies": pol(b_max=32768, leftover="none", history=50), "engine.replicas": 2, "engine.routing": "least-loaded"}),
 # benchmarks/engine.py's default cells at nominal load 0.95, 1 and 16 replicas
 "big-1rep":        ("default", dict(queries=20000, rate=71.72776011783172), {"policies": pol(), "engine.max_num_seqs": 256}),
 "big-16rep":       ("default", dict(queries=20000, rate=1147.6441618853075), {"policies": pol(), "engine.replicas": 16, "engine.max_num_seqs": 256}),
}


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write the run folders into (must not exist)")
    ap.add_argument("--check", type=Path, metavar="REF", help="compare with these run folders")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    args = ap.parse_args(argv)
    from sim.experiments.runner import run

    warnings.simplefilter("ignore")
    for name, (sc, kw, ov) in CASES.items():
        if args.only and name not in args.only:
            continue
        run(sc, out=args.out / name, overrides=ov, report=False, **kw)
    if args.check is None:
        return 0
    got, ref = digests(args.out), digests(args.check)
    if args.only:  # compare the chosen cases only
        ref = {k: v for k, v in ref.items() if k.split("/")[0] in args.only}
    same = sum(got.get(k) == v for k, v in ref.items())
    print(f"identical: {same} / {len(ref)} reference files")
    for k in sorted(set(ref) | set(got)):
        if got.get(k) != ref.get(k):
            print(f"differs or missing: {k}")
    return 0 if same == len(ref) == len(got) else 1


if __name__ == "__main__":
    raise SystemExit(main())
