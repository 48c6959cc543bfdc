"""``clearsim calibrate RUN_DIR`` and ``clearsim calibrate --fit RUN... --check RUN...``: thin
layers over :func:`sim.experiments.calibrate.calibrate` and :func:`sim.experiments.calibrate.out_of_sample`."""

from __future__ import annotations

import json

from sim.foundation.cli_args import positive_int
from sim.foundation.errors import UserError
from sim.experiments.recorded import LIMITS_HELP


def cmd_calibrate(args) -> int:
    from sim.experiments.calibrate import calibrate, format_out_of_sample, format_report, out_of_sample

    if args.fit or args.check:
        if args.run_dir is not None or args.kv_blocks is not None:
            raise UserError("RUN_DIR and --kv-blocks go with a single-run calibration; with "
                            "--fit/--check give the runs to those options only", field="--fit")
        res = out_of_sample(args.fit or [], args.check or [], max_evals=args.max_evals)
        print(json.dumps(res, indent=2, sort_keys=True) if args.json else format_out_of_sample(res))
        return 0
    if args.run_dir is None:
        raise UserError("give a RUN_DIR, or --fit RUN... --check RUN...", field="RUN_DIR")
    res = calibrate(args.run_dir, kv_blocks=args.kv_blocks, max_evals=args.max_evals)
    print(json.dumps(res, indent=2, sort_keys=True) if args.json else format_report(res))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit the step-time model to recorded vLLM runs and compare latencies",
        description="Replay a recorded vLLM run (requests.jsonl + timeseries.csv + meta.json, the "
        "layout of shared/data/serving/vllm_runs/* and of `clearsim traces record-serving`) "
        "through the engine with the run's flags (max_num_seqs, max_num_batched_tokens, "
        "data-parallel replicas, KV blocks: recorded, else inferred from the run), fit the linear "
        "step model c0 + c1 prefill tokens + c2 decoding sequences, and print simulated vs real "
        "TTFT, TPOT and E2E (mean, median, p90) with the error of each and the coefficients. "
        "The fit starts from a regression of every request's decode time (last - first token: "
        "output - 1 steps) on the prefill tokens and decoding sequences the other requests' "
        "timestamps put in its window (a run with fewer than 10 usable requests, or a KV-bound "
        "one whose replay preempts: the per-second timeseries.csv), then refines it by "
        "Nelder-Mead over full replays; client-timed runs "
        "also get a per-request API-server overhead. "
        "With --fit and --check: fit on some runs together, report the errors on others (out of "
        "sample; target median E2E and mean TPOT within 10%). On the shared runs "
        "(docs/validation.md) that is met on 10 of 16 checks: both RTX 4090 runs of one model "
        "predict each other, CPU runs miss where the check run is saturated or the fit saw only "
        "another end of the load range.",
        epilog="Every run folder is checked first (sim/experiments/recorded.py): a broken requests.jsonl, "
        "meta.json or timeseries.csv is one error line naming the file, line and field. "
        + LIMITS_HELP)
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None,
                   help="folder of the recorded run (in-sample calibration)")
    p.add_argument("--fit", nargs="+", metavar="RUN", default=None,
                   help="runs to fit one step model on, together (out-of-sample mode)")
    p.add_argument("--check", nargs="+", metavar="RUN", default=None,
                   help="runs to replay with that model and report errors on; none may be a "
                   "--fit run")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--kv-blocks", type=positive_int, default=None, metavar="N",
                   help="KV cache blocks to simulate when meta.json does not record them "
                   "(default: inferred from the run's time series, unlimited if it never ran "
                   "out of KV)")
    p.add_argument("--max-evals", type=positive_int, default=160, metavar="N",
                   help="replays the fit may use (default 160)")
    p.set_defaults(func=cmd_calibrate)
