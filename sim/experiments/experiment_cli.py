"""``clearsim sweep``, ``clearsim plan`` and ``clearsim report``: thin layers over
:func:`sim.experiments.sweep.sweep`, :func:`sim.experiments.plan.plan` and :func:`sim.experiments.report.report`."""

from __future__ import annotations

import argparse

from sim.experiments.executors import EXECUTOR_HELP, WORKER_TIMEOUT_S

SET_HELP = ("override any dotted scenario key, e.g. --set engine.replicas=4 (the value is read "
            "as YAML; repeatable)")


PROGRESS_HELP = ("show progress on stderr (default: on): a bar on a terminal; otherwise, as in a "
                 "log, CI or a notebook, one line (done/total, rate, elapsed, ETA) every 10 s or "
                 "10%% of the {noun}, whichever comes first{extra}. --no-progress hides it")


def add_progress_option(p: argparse.ArgumentParser, noun: str, extra: str = "") -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=PROGRESS_HELP.format(noun=noun, extra=extra))


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                   help=SET_HELP)


def describe(spec: dict, prefix: str = "") -> str:
    """The fields of a sweep or plan file, from their specs (for --help)."""
    from sim.foundation.spec import REQUIRED

    lines = []
    for key, f in spec.items():
        tail = " (required)" if f.default is REQUIRED else (
            "" if f.default in (None, "") else f" (default {f.default})")
        lines.append(f"  {prefix}{key}: {f.describe()}; {f.doc}{tail}")
    return "\n".join(lines)


def _timeout(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return v


def print_shipped_experiments() -> None:
    """The shipped sweep and plan files (for ``clearsim scenarios``)."""
    from sim.experiments.plan import plans_dir
    from sim.foundation.spec import read_yaml
    from sim.experiments.sweep import sweeps_dir

    for title, folder in (("sweeps (clearsim sweep NAME)", sweeps_dir()),
                          ("plans (clearsim plan NAME)", plans_dir())):
        files = sorted(folder.glob("*.yaml"))
        if files:
            print(f"\n{title}:")
        for f in files:
            desc = " ".join(str(read_yaml(f, "sweep").get("description", "")).split())
            print(f"{f.stem:24s} {desc}")


def cmd_sweep(args) -> int:
    from sim.experiments.sweep import load_sweep, parse_overrides, sweep

    if args.dry_run:
        sw = load_sweep(args.sweep, parse_overrides(args.overrides))
        print(f"{sw.where}: ok ({len(sw.cells)} cells x {len(sw.seeds)} seeds = {len(sw.tasks)} "
              f"runs of {len(sw.policies)} policies: {', '.join(sw.policies)}; grid over "
              f"{', '.join(sw.keys) or 'nothing'}; fingerprint {sw.fingerprint})")
        return 0
    res = sweep(args.sweep, out=args.out, executor=args.executor, resume=args.resume,
                overrides=parse_overrides(args.overrides), connect_timeout=args.connect_timeout,
                worker_timeout=args.worker_timeout, report=not args.no_report,
                progress=args.progress)
    sw = res.sweep
    print(f"sweep {sw.name}: {len(sw.cells)} cells x {len(sw.seeds)} seeds x {len(sw.policies)} "
          f"policies = {len(res.results)} rows ({res.ran} runs now, "
          f"{len(sw.tasks) - res.ran} already done)")
    print(f"wrote {res.out_dir}/results.parquet, aggregate.parquet"
          + ("" if args.no_report else ", report.html"))
    return 0


def cmd_plan(args) -> int:
    from sim.experiments.plan import plan
    from sim.experiments.sweep import parse_overrides

    res = plan(args.plan, overrides=parse_overrides(args.overrides),
               policies=args.policies.split(",") if args.policies else None,
               price_per_gpu_hour=args.price_per_gpu_hour, progress=args.progress)
    print(res.table())
    return 0


def cmd_report(args) -> int:
    from sim.experiments.report import report

    print(f"wrote {report(args.folder, args.out)}")
    return 0


def register(sub) -> None:
    from sim.experiments.plan import PLAN_SPEC, SEARCH_SPEC, SLO_SPEC
    from sim.experiments.sweep import SWEEP_SPEC

    p = sub.add_parser(
        "sweep", help="run a scenario over a grid of keys x seeds (resumable, local or on Dask)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sweep file fields (YAML):\n" + describe(SWEEP_SPEC),
        description="Run a base scenario over the cartesian product of a grid of dotted scenario "
        "keys, times seeds. Writes DIR/results.parquet (one row per cell, policy and seed), "
        "DIR/aggregate.parquet (means and 95% confidence intervals over seeds) and "
        "DIR/report.html. Each finished (cell, seed) is saved at once, atomically, so an "
        "interrupted sweep (even kill -9) resumes with --resume without recomputing anything.")
    p.add_argument("sweep", help="shipped sweep name (scenarios/sweeps/) or path to a sweep YAML")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default: sweeps/<name>); must be new, empty or hold "
                   "this same sweep (with --resume)")
    p.add_argument("--executor", default="local", metavar="KIND",
                   help=f"where runs execute: {EXECUTOR_HELP} (default: local). N is the number "
                   "of workers (default: the number of cores); dask:// joins a running "
                   "scheduler whose workers have clearsim installed. Results are identical "
                   "row for row whichever executor runs them")
    p.add_argument("--resume", action="store_true",
                   help="finish a sweep already started in --out (its finished cells are kept; "
                   "tasks that failed at run time, listed in DIR/failed.json, run again)")
    p.add_argument("--connect-timeout", type=_timeout, default=10.0, metavar="SECONDS",
                   help="how long to try reaching a dask:// scheduler (default: 10)")
    p.add_argument("--worker-timeout", type=_timeout, default=WORKER_TIMEOUT_S, metavar="SECONDS",
                   help="how long to wait for a Dask scheduler with no workers to get one before "
                   f"giving up with exit code 2, before anything is written (default: "
                   f"{WORKER_TIMEOUT_S:g}); also how long a scheduler may be left without "
                   "workers mid-sweep before the sweep stops (finished cells kept for --resume). "
                   "Connected, the sweep prints the Dask dashboard's address on stderr")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the sweep and every cell's scenario, print the work, run nothing")
    add_progress_option(p, "tasks")
    add_set_option(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser(
        "plan", help="capacity planning: fewest replicas or highest rate meeting the SLOs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Plan file fields (YAML):\n" + "\n".join([
            describe(PLAN_SPEC), describe(SEARCH_SPEC, "search."), describe(SLO_SPEC, "slo.")]),
        description="For each policy, bisect over simulated runs (averaged over seeds) for the "
        "fewest replicas, or the highest arrival rate, with p99 end-to-end latency <= L and "
        "accuracy >= A at the plan's budget. Prints replicas, accuracy, p99, tokens per query "
        "and cost: provisioned GPU-hours per 1,000 queries and dollars at the hourly price.")
    p.add_argument("plan", help="shipped plan name (scenarios/plans/) or path to a plan YAML")
    p.add_argument("--policies", metavar="A,B", default=None,
                   help="comma-separated policies to size (default: the plan's)")
    p.add_argument("--price-per-gpu-hour", type=float, default=None, metavar="DOLLARS",
                   help="hourly price of one GPU replica (default: the plan's)")
    add_progress_option(p, "simulated runs", " (the total is the bisection's upper bound, "
                        "lowered as each policy's search ends)")
    add_set_option(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "report", help="write the interactive report.html of a run or sweep folder",
        description="Write one self-contained report.html (plotly.js embedded, works offline) "
        "for a run folder (queries.parquet) or a sweep folder (results.parquet). Run and sweep "
        "write it automatically; this rewrites it.")
    p.add_argument("folder", help="a run folder or a sweep folder")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="where to write the page (default: FOLDER/report.html); checked before "
                   "the folder is read, and the folder's files are checked before any figure "
                   "(sim/experiments/folders.py)")
    p.set_defaults(func=cmd_report)
