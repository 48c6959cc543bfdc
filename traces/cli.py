"""``clearsim traces ...``: inspect and manage trace sets (a thin layer over :mod:`traces`)."""

from __future__ import annotations

import importlib


def cmd_traces_list(args) -> int:
    from traces.registry import embedded_dir, list_trace_sets
    from traces.schema import TraceSet

    for name, path in list_trace_sets().items():
        ts = TraceSet.read(path)
        where = "embedded" if path.parent == embedded_dir() else "imported"
        m = ts.meta
        spq = ts.samples_per_query
        print(f"{name}  [{where}] {ts.n_queries} queries x {spq.min()}"
              f"{'' if spq.min() == spq.max() else '-' + str(spq.max())} samples; "
              f"datasets {', '.join(ts.datasets())}; model {m.get('model', '?')}; "
              f"{m.get('decoding', '?')}; source {m.get('source', '?')}")
    return 0


#: Modules adding ``clearsim traces`` subcommands: each has ``register(traces_subparsers)``.
TRACES_COMMAND_MODULES = ["traces.collect.cli"]


def register(sub) -> None:
    from sim.cli import Parser

    p = sub.add_parser("traces", help="trace sets: list, inspect, import, collect")
    tsub = p.add_subparsers(dest="traces_command", metavar="TRACES_COMMAND", parser_class=Parser)
    q = tsub.add_parser("list", help="every trace set (embedded and imported) with its provenance")
    q.set_defaults(func=cmd_traces_list)
    for module in TRACES_COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(tsub)
