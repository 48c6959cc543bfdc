"""``clearsim calibrate RUN_DIR``: a thin layer over :func:`sim.calibrate.calibrate`."""

from __future__ import annotations

import json

from sim.cli_args import positive_int


def cmd_calibrate(args) -> int:
    from sim.calibrate import calibrate, format_report

    res = calibrate(args.run_dir, kv_blocks=args.kv_blocks, max_evals=args.max_evals)
    print(json.dumps(res, indent=2, sort_keys=True) if args.json else format_report(res))
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit the step-time model to a recorded vLLM run and compare latencies",
        description="Replay a recorded vLLM run (requests.jsonl + timeseries.csv + meta.json, the "
        "layout of shared/data/serving/vllm_runs/*) through the engine with the run's flags "
        "(max_num_seqs, max_num_batched_tokens, data-parallel replicas, KV blocks), fit the linear "
        "step model c0 + c1 prefill tokens + c2 decoding sequences, and print simulated vs real "
        "TTFT, TPOT and E2E (mean, median, p90) with the error of each and the coefficients.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="folder of the recorded run")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--kv-blocks", type=positive_int, default=None, metavar="N",
                   help="KV cache blocks to simulate when meta.json does not record them "
                   "(default: unlimited)")
    p.add_argument("--max-evals", type=positive_int, default=160, metavar="N",
                   help="replays the fit may use (default 160)")
    p.set_defaults(func=cmd_calibrate)
