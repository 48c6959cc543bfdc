"""``clearsim traces ...``: inspect and manage trace sets (a thin layer over :mod:`traces.api`).

Each subcommand maps its options one to one onto the Python function of the same name
(``import`` -> :func:`traces.api.import_traces`, since ``import`` is a keyword).
"""

from __future__ import annotations

import importlib

from sim.foundation.cli_args import comma_list, non_negative_int, positive_float, positive_int


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
              f"{m.get('decoding', '?')}; source {m.get('source', m.get('imported_from', '?'))}")
    return 0


def cmd_traces_show(args) -> int:
    from traces.api import format_show, show

    print(format_show(show(args.name, budgets=args.budgets, plot=args.plot)))
    return 0


def cmd_traces_import(args) -> int:
    from traces.api import import_traces

    path = import_traces(args.format, args.path, args.name, tokenizer=args.tokenizer,
                         dataset=args.dataset, max_tokens=args.max_tokens, model=args.model,
                         decoding=args.decoding, probes=args.probes, targets=args.targets,
                         force=args.force)
    print(f"imported {args.name} -> {path}")
    if args.probes:
        from traces.schema import TraceSet

        print(format_probe_report(TraceSet.read(path).meta["probes"]))
    return 0


def format_probe_report(p: dict) -> str:
    """The probe import's counts, skips and figures, for the terminal (all are in the meta)."""
    a, g = p["final_agreement"], p["gain"]
    lines = [f"probes: {p['probes_kept']} kept of {p['probes_read']} read; {p['runs']} runs, "
             f"{p['runs_without_probes']} without probes ({p['runs_mismatched']} whose probes "
             "run past the run's end were dropped)",
             f"grader vs source on the last probe: {a['agree']}/{a['runs']} agree "
             f"({a['rate']}); finished runs {a['agree_finished']}/{a['runs_finished']}",
             "mean accuracy at " + ", ".join(
                 f"{b}: {h:.3f} -> {f:.3f}" for b, h, f in
                 zip(g["budgets"], g["hard_cap"], g["forced_answer"])) + " (hard cap -> forced answer)"]
    return "\n".join(lines)


def cmd_traces_fit(args) -> int:
    from traces.api import fit, format_fit

    print(format_fit(fit(args.name, beta=args.beta, method=args.method, budgets=args.budgets,
                         out=args.out)))
    return 0


def cmd_traces_synth(args) -> int:
    import time

    from traces.api import synth

    t0 = time.perf_counter()
    path = synth(args.queries, args.like, args.out, seed=args.seed, samples=args.samples,
                 beta=args.beta, name=args.name)
    print(f"wrote {args.queries:,} synthetic queries like {args.like} to {path} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_traces_predict(args) -> int:
    from traces.api import format_predict, predict

    print(format_predict(predict(args.train, args.test, ridge=args.ridge,
                                 predictors=args.predictors)))
    return 0


#: Modules adding ``clearsim traces`` subcommands: each has ``register(traces_subparsers)``.
TRACES_COMMAND_MODULES = ["traces.collect.cli", "traces.collect.record_cli"]


def register(sub) -> None:
    from sim.foundation.cli_args import Parser
    from traces.api import DEFAULT_BUDGETS
    from traces.importers import FORMATS
    from traces.tau_models import DEFAULT_TEST, DEFAULT_TRAIN

    budgets_help = ("comma-separated budgets in tokens (default "
                    f"{','.join(map(str, DEFAULT_BUDGETS))})")
    p = sub.add_parser("traces", help="trace sets: list, show, import, fit, synth, predict, collect")
    tsub = p.add_subparsers(dest="traces_command", metavar="TRACES_COMMAND", parser_class=Parser)

    q = tsub.add_parser("list", help="every trace set (embedded and imported) with its provenance")
    q.set_defaults(func=cmd_traces_list)

    q = tsub.add_parser("show", help="mean accuracy per budget, tau spread, never-solved share",
                        description="Mean accuracy at each budget (a hard cap), the spread of the "
                        "true emergence threshold tau and the share of never-solved queries, "
                        "overall and per dataset.")
    q.add_argument("name", metavar="NAME", help="trace set name or .parquet path")
    q.add_argument("--budgets", type=comma_list(float), default=list(DEFAULT_BUDGETS), help=budgets_help)
    q.add_argument("--plot", metavar="FILE.html", default=None,
                   help="also draw the recorded and fitted curves and the tau histogram "
                   "(self-contained plotly HTML)")
    q.set_defaults(func=cmd_traces_show)

    q = tsub.add_parser("import", help="import a recording into $CLEARSIM_HOME/traces",
                        description="Validate every line, then write NAME.parquet into the user "
                        "trace folder ($CLEARSIM_HOME/traces, default ~/.clearsim/traces); "
                        "a bad file names its line and field and imports nothing.")
    q.add_argument("format", metavar="FORMAT", choices=FORMATS,
                   help=f"one of {', '.join(FORMATS)}: the generations JSONL (numbers only), "
                   "the Qwen2.5-Math evaluation output (texts: needs --tokenizer), or a "
                   ".parquet trace file of ours (e.g. 'traces collect' output from a GPU "
                   "machine; its NAME.samples.jsonl comes along)")
    q.add_argument("path", metavar="PATH", help="the file to import")
    q.add_argument("--name", required=True, help="name of the new trace set")
    q.add_argument("--tokenizer", metavar="HF_NAME", default=None,
                   help="qwen-harness: Hugging Face tokenizer counting tokens (needs the "
                   "'transformers' package), e.g. Qwen/Qwen2.5-Math-7B-Instruct")
    q.add_argument("--dataset", default=None,
                   help="qwen-harness: dataset name (default: file name after '__', else the "
                   "file name)")
    q.add_argument("--max-tokens", type=positive_int, default=None,
                   help="qwen-harness: the recording cap; completions this long are truncated")
    q.add_argument("--model", default=None, help="provenance: the model that generated it")
    q.add_argument("--decoding", default=None, help="provenance: decoding (e.g. 'greedy')")
    q.add_argument("--probes", metavar="PROBES.csv.gz", default=None,
                   help="generations: the runs' forced-answer probes (query_id, seed, "
                   "token_position, probe_answer, is_certain, probe_out_tokens), graded at "
                   "import with math-verify; needs --targets")
    q.add_argument("--targets", metavar="TARGETS.csv", default=None,
                   help="generations with --probes: reference answers (query_id, target)")
    q.add_argument("--force", action="store_true",
                   help="replace an imported set (or shadow an embedded one) of the same name")
    q.set_defaults(func=cmd_traces_import)

    q = tsub.add_parser("fit", help="fit p_i, tau_i and a global beta; print the fit error",
                        description="Fit the paper's curve model acc_i(b) = p_i * Gamma(2, beta) "
                        "CDF of (b - tau_i) to every query (docs/traces.md) and compare it with "
                        "the recorded curves on a budget grid.")
    q.add_argument("name", metavar="NAME", help="trace set name or .parquet path")
    q.add_argument("--beta", type=positive_float, default=None,
                   help="use this beta instead of estimating it")
    q.add_argument("--method", choices=("mle", "moments"), default="mle",
                   help="beta estimator: profile likelihood (mle, default) or pooled within-query "
                   "variance (moments, what CLEAR's 'beta: fitted' uses)")
    q.add_argument("--budgets", type=comma_list(float), default=list(DEFAULT_BUDGETS), help=budgets_help)
    q.add_argument("--out", metavar="FILE.csv", default=None,
                   help="also write per-query p, fitted tau and empirical tau as CSV")
    q.set_defaults(func=cmd_traces_fit)

    q = tsub.add_parser("synth", help="a synthetic set drawn from a fitted model",
                        description="Draw N synthetic queries from the fitted curves of a set "
                        "(templates drawn with replacement; fresh samples from each template's "
                        "fitted curve) and write them as a trace file.")
    q.add_argument("--queries", type=positive_int, required=True, help="number of queries N")
    q.add_argument("--like", required=True, metavar="NAME", help="trace set to imitate")
    q.add_argument("--out", required=True, metavar="FILE.parquet", help="output trace file")
    q.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
    q.add_argument("--samples", type=positive_int, default=None,
                   help="samples per query (default: as many as the template query has)")
    q.add_argument("--beta", type=positive_float, default=None,
                   help="beta of the fitted curves (default: estimated, see 'fit')")
    q.add_argument("--name", default=None, help="the set's name (default: the file name)")
    q.set_defaults(func=cmd_traces_synth)

    q = tsub.add_parser("predict", help="train and evaluate tau predictors (out of distribution)",
                        description="Train the prior and learned tau predictors on the training "
                        "sets and print, per test set, the MAE of log tau and Spearman's rank "
                        "correlation over its solved queries.")
    q.add_argument("--train", type=comma_list(str), default=list(DEFAULT_TRAIN), metavar="A,B",
                   help=f"training sets (default {','.join(DEFAULT_TRAIN)})")
    q.add_argument("--test", type=comma_list(str), default=list(DEFAULT_TEST), metavar="C,D",
                   help=f"test sets (default {','.join(DEFAULT_TEST)})")
    q.add_argument("--predictors", type=comma_list(str), default=["prior", "learned"],
                   help="which predictors (default prior,learned)")
    q.add_argument("--ridge", type=float, default=1.0, help="L2 penalty of 'learned' (1.0)")
    q.set_defaults(func=cmd_traces_predict)

    for module in TRACES_COMMAND_MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(tsub)
