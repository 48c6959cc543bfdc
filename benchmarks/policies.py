"""Policy speed: what each policy's own decisions cost per arrival, and what a whole run costs.

    python benchmarks/policies.py            # 20,000 arrivals per case
    python benchmarks/policies.py --quick    # 4,000 arrivals, fewer end-to-end cases

Two parts, one JSON line per case, every figure a ratio against a baseline timed in the same
process just before or after (the machine is shared: absolute times move, ratios much less):

* ``"part": "allocation"``: the policy alone, driven through the decision groups of a default
  workload as :func:`sim.core.allocation.decide_ahead` would (feedback policies get no completions
  here: their cost per decision is the same), in microseconds per arrival; ``ratio_to_uniform``
  against ``uniform`` on the same arrivals.  For ``clear-posted`` also ``old_us_per_arrival``,
  the pre-issue-11 way on the same arrivals (a fresh ClearMarket over the history per arrival,
  ``tests/policies/reference_market.py``), and ``speedup`` = old / new.
* ``"part": "run"``: :func:`sim.experiments.runner.simulate` end to end (workload, decisions, engine,
  metrics), ``queries_per_second``, against the lean SimPy M/M/1 loop of
  ``benchmarks/engine.py`` on the same number of queries (``ratio`` = run wall / baseline wall),
  for 1 and 16 replicas at nominal load 0.3 and 0.95 (the engine benchmark's definition).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the ``policies`` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))


def _engine_bench():
    """benchmarks/engine.py as a module (its scenario() and lean_mm1())."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "benchmarks" / "engine.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

ALLOC_POLICIES = ("uniform", "clear", "clear-windowed", "clear-posted", "binned")
RUN_POLICIES = ("uniform", "clear", "clear-windowed", "clear-posted", "binned")


def _policy(name: str, sc: dict, wl, ts):
    """The policy as sim.experiments.runner builds it for this scenario and workload."""
    from policies.base import REGISTRY, RunContext
    from sim.experiments.runner import policy_context
    from traces.curves import PAPER_BETA, fit_beta

    cls = REGISTRY[name]
    entry = next(p for p in sc["policies"] if p["name"] == name)
    params = {k: v for k, v in entry.items() if k not in ("name", "label")}
    ctx = RunContext(target_tokens_per_query=sc["budget"], fitted_beta=fit_beta(ts) or PAPER_BETA,
                     n_queries=wl.n)
    return cls(params, policy_context(cls, ctx, wl, sc))


def _workload(n: int, policies):
    from sim.experiments.runner import load_traces, resolve
    from sim.core.workload import build_workload

    sc = resolve("default", policies=",".join(policies), queries=n)
    ts = load_traces(sc)
    wl = build_workload(ts, n_queries=n, rate=sc["arrivals"]["rate"], mix=sc["traces"]["mix"],
                        predictor=sc["predictor"], seed=sc["seed"], spec=sc["traces"],
                        arrivals=sc["arrivals"])
    return sc, ts, wl


def allocation_seconds(policy, wl, target: float) -> float:
    """Wall seconds of the policy's decisions over every group of the workload."""
    from sim.core.allocation import decision_groups

    groups = decision_groups(policy.timing, wl.arrival_s)
    t0 = time.perf_counter()
    for _, idx in groups:
        policy.allocate(wl.view(idx), target * len(idx))
    return time.perf_counter() - t0


def old_posted_seconds(policy, wl, target: float) -> float:
    """The pre-issue-11 clear-posted decision on the same arrivals: a fresh ClearMarket over
    the history per arrival (the frozen copy kept for the tests), same account."""
    sys.path.insert(0, str(ROOT / "tests" / "policies"))
    from reference_market import ClearMarket

    p, acct = policy.params, policy.account
    hist: deque[float] = deque(maxlen=p["history"])
    beta = policy.market.beta
    t0 = time.perf_counter()
    for i, tau in enumerate(np.asarray(wl.tau_pred, dtype=float)):
        now = float(wl.arrival_s[i])
        hist.append(tau)
        acct.arrive()
        eff = policy.target_eff(now)
        res = ClearMarket(np.fromiter(hist, float), beta, p["b_max"]).allocate(
            eff * len(hist), p["leftover"])
        cap = acct.clip(int(res.budgets[-1]), now)
        acct.commit(0 if cap < tau else cap)
    return time.perf_counter() - t0


def allocation_cases(n: int, repeats: int):
    sc, ts, wl = _workload(n, ALLOC_POLICIES)
    target = float(sc["budget"])
    for name in ALLOC_POLICIES:
        news, bases, olds = [], [], []
        for _ in range(repeats):  # interleaved: baseline, policy, (old) in each round
            bases.append(allocation_seconds(_policy("uniform", sc, wl, ts), wl, target))
            news.append(allocation_seconds(_policy(name, sc, wl, ts), wl, target))
            if name == "clear-posted":
                m = min(n, 2000)  # the old way costs ~2 ms per arrival: time a prefix
                olds.append(old_posted_seconds(_policy(name, sc, wl, ts), _prefix(wl, m),
                                               target) / m * n)
        new, base = statistics.median(news), statistics.median(bases)
        row = {"part": "allocation", "policy": name, "arrivals": n,
               "us_per_arrival": new / n * 1e6, "uniform_us_per_arrival": base / n * 1e6,
               "ratio_to_uniform": new / base}
        if olds:
            old = statistics.median(olds)
            row.update(old_us_per_arrival=old / n * 1e6, speedup=old / new)
        yield row


def _prefix(wl, m: int):
    """The first m arrivals of a workload (only what old_posted_seconds reads)."""
    class _W:
        tau_pred = wl.tau_pred[:m]
        arrival_s = wl.arrival_s[:m]
    return _W()


def run_case(policy: str, replicas: int, load: float, n: int) -> dict:
    from sim.experiments.runner import simulate

    eng = _engine_bench()
    lean_mm1 = eng.lean_mm1
    sc = eng.scenario("default", policy, replicas, load, n)
    base0 = lean_mm1(n, load)
    t0 = time.perf_counter()
    simulate(sc)
    wall = time.perf_counter() - t0
    base = min(base0, lean_mm1(n, load))  # the baseline before and after: the quieter one
    return {"part": "run", "policy": policy, "replicas": replicas, "load": load, "queries": n,
            "queries_per_second": n / wall, "baseline_queries_per_second": n / base,
            "ratio": wall / base}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=None,
                    help="arrivals per case (default 20000; 4000 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="4000 arrivals, one repeat, end-to-end at load 0.95 only")
    ap.add_argument("--part", choices=("allocation", "run", "both"), default="both",
                    help="which part to run (default both)")
    args = ap.parse_args(argv)
    n = args.queries or (4_000 if args.quick else 20_000)
    if args.part in ("allocation", "both"):
        for row in allocation_cases(n, 1 if args.quick else 3):
            print(json.dumps(row), flush=True)
    if args.part in ("run", "both"):
        loads = (0.95,) if args.quick else (0.3, 0.95)
        for p in RUN_POLICIES:
            for r in (1, 16):
                for load in loads:
                    print(json.dumps(run_case(p, r, load, n)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
