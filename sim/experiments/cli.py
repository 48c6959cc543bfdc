"""The ``clearsim`` command: a thin layer over the Python API (same names, same options).

Bad input raises :class:`~sim.foundation.errors.UserError`; here it becomes one line on stderr and exit
code 2, with no traceback and no partial output.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sim import __version__
from sim.foundation.cli_args import Parser, non_negative_int, positive_float, positive_int
from sim.foundation.errors import UserError


#: Modules that add their own subcommands: each has ``register(subparsers)``.
COMMAND_MODULES = ["traces.cli", "sim.experiments.experiment_cli", "sim.experiments.calibrate_cli"]


def cmd_run(args) -> int:
    from sim.experiments.runner import run
    from sim.experiments.sweep import parse_overrides

    result = run(args.scenario, out=args.out, seed=args.seed, policies=args.policies,
                 budget=args.budget, rate=args.rate, queries=args.queries,
                 overrides=parse_overrides(args.overrides), report=not args.no_report)
    sc = result.scenario
    arr = sc["arrivals"]
    rate = f"{arr['rate']:g}/s" if arr.get("rate") else f"{arr['process']} ({arr.get('trace') or 'schedule'})"
    print(f"scenario {sc['name']}: {arr['queries']} queries at "
          f"{rate}, budget {sc['budget']:g} tokens/query, seed {sc['seed']}")
    print(result.table())
    print(f"wrote {result.out_dir}")
    return 0


def cmd_validate(args) -> int:
    from sim.experiments.runner import validate
    from sim.experiments.scenario import resolve_scenario_path
    from sim.experiments.sweep import parse_overrides

    sc = validate(args.scenario, overrides=parse_overrides(args.overrides))
    where = resolve_scenario_path(args.scenario)
    print(f"{where}: ok ({len(sc['policies'])} policies, {sc['arrivals']['queries']} queries)")
    return 0


def cmd_scenarios(args) -> int:
    from sim.experiments.scenario import describe_fields, load_scenario, shipped_scenarios

    for name in shipped_scenarios():
        print(f"{name:24s} {load_scenario(name)['description']}")
    from sim.experiments.experiment_cli import print_shipped_experiments

    print_shipped_experiments()
    if args.fields:
        print("\nScenario fields:\n" + describe_fields())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from sim.experiments.experiment_cli import add_set_option
    from sim.experiments.scenario import GUARDS_HELP, describe_fields

    ap = Parser(prog="clearsim", description="Simulate serving LLM reasoning under a token budget: "
                 "recorded accuracy-vs-tokens traces, SimPy continuous-batching replicas, and "
                 "pluggable budget policies (uniform, CLEAR, windowed CLEAR).")
    ap.add_argument("--version", action="version", version=f"clearsim {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("run", help="run a scenario against each of its policies and write a run folder",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Replay one arrival stream of real reasoning queries against each "
                       "policy (same arrivals, same hidden outcomes) and print accuracy, tokens "
                       "per query, abandon rate and latency side by side. Writes queries.parquet, "
                       "summary.json, bench.json (vllm bench serve layout) and the resolved "
                       "scenario.yaml into the run folder.",
                       epilog="Scenario fields (YAML):\n" + describe_fields() + "\n\n"
                       + GUARDS_HELP)
    p.add_argument("scenario", nargs="?", default="default",
                   help="shipped scenario name or path to a YAML file (default: default)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="run folder to create (default: runs/<scenario>-<timestamp>/, the name "
                   "reduced to letters, digits, '.', '_', '-'); must not exist or be empty, and "
                   "is checked before the simulation")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="random seed (overrides the scenario's); same seed, same bytes out")
    p.add_argument("--policies", metavar="A,B", default=None,
                   help="comma-separated policy names or labels to run (default: the scenario's); "
                   "names not in the scenario run with default parameters")
    p.add_argument("--budget", metavar="TOKENS", type=positive_float, default=None,
                   help="target mean tokens per query (overrides the scenario's budget)")
    p.add_argument("--rate", metavar="RPS", type=positive_float, default=None,
                   help="mean arrivals per second (overrides arrivals.rate)")
    p.add_argument("--queries", metavar="N", type=positive_int, default=None,
                   help="number of arriving queries (overrides arrivals.queries)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    add_set_option(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a scenario file without running it")
    p.add_argument("scenario", help="shipped scenario name or path to a YAML file")
    add_set_option(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("scenarios", help="list the shipped scenarios")
    p.add_argument("--fields", action="store_true", help="also print every scenario field")
    p.set_defaults(func=cmd_scenarios)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 0
    if not getattr(args, "func", None):  # no command (or no subcommand): one line, exit 2
        print("clearsim: error: give a command (see 'clearsim --help' for the list)",
              file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except UserError as exc:
        print(f"clearsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clearsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
