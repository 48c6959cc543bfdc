"""``clearsim traces record-serving`` and ``clearsim traces tiny-model``: thin layers over
:func:`traces.collect.loadgen.record_serving` and :func:`traces.collect.tiny_model.build_tiny_model`."""

from __future__ import annotations

import argparse
import sys

from sim.foundation.cli_args import comma_list, positive_float, positive_int


def _range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two integers), got {text!r}") from None
    return lo, hi


def _cpu_list(text: str) -> list[int]:
    try:
        cpus = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU numbers like 0 or 0,1, got {text!r}") from None
    if any(c < 0 for c in cpus):
        raise argparse.ArgumentTypeError(f"CPU numbers are >= 0, got {text!r}")
    return cpus


EPILOG = """\
examples:
  clearsim traces tiny-model /tmp/tiny
  clearsim traces record-serving --serve /tmp/tiny --rates 1,2,4 --requests 100 --out runs/
  clearsim traces record-serving --endpoint http://127.0.0.1:8000/v1 --rates 2 --max-num-seqs 16
  clearsim calibrate --fit runs/tiny_r1 --check runs/tiny_r2 runs/tiny_r4

See docs/vllm-cpu.md.
"""


def cmd_record(args) -> int:
    from traces.collect.loadgen import record_serving  # noqa: PLC0415

    folders = record_serving(
        args.out, rates=args.rates, endpoint=args.endpoint, serve=args.serve,
        requests=args.requests, seed=args.seed, prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens, max_seconds=args.max_seconds,
        concurrency=args.concurrency, request_timeout=args.request_timeout,
        tick_seconds=args.tick_seconds, max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len, max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_gib=args.kv_cache_gib, engine_cpus=args.engine_cpus, name=args.name,
        log=lambda msg: print(f"[record] {msg}", file=sys.stderr))
    for f in folders:
        print(f"wrote {f}")
    return 0


def cmd_tiny(args) -> int:
    from traces.collect.tiny_model import build_tiny_model  # noqa: PLC0415

    path = build_tiny_model(args.out, layers=args.layers, hidden=args.hidden, heads=args.heads,
                            vocab=args.vocab, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def register(tsub) -> None:
    p = tsub.add_parser(
        "record-serving", help="record real vLLM serving runs (Poisson load) for calibrate",
        description="Offer open-loop Poisson load at each rate to a vLLM server on 127.0.0.1 "
        "(a running one, --endpoint, or one started here on a model folder, --serve) and write "
        "one run folder per rate: requests.jsonl + timeseries.csv + meta.json, the layout "
        "`clearsim calibrate` reads. Prompts are token ids of pinned lengths, outputs pinned "
        "with ignore_eos. Bounded by --requests and --max-seconds per rate.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--endpoint", metavar="URL", help="base URL http://127.0.0.1:PORT/v1 of a "
                     "running vLLM server (loopback only)")
    src.add_argument("--serve", metavar="MODEL_DIR", help="start a vLLM server on this model "
                     "folder (python -m vllm.entrypoints.openai.api_server), record, stop it")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the run folders")
    p.add_argument("--name", help="run folder stem (default: the model folder's name); folders "
                   "are NAME_r<RATE>")
    p.add_argument("--rates", type=comma_list(positive_float), required=True, metavar="R,R,...",
                   help="offered loads in requests/s, one run each")
    p.add_argument("--requests", type=positive_int, default=100, metavar="N",
                   help="requests per rate (default 100)")
    p.add_argument("--max-seconds", type=positive_float, default=120.0, metavar="S",
                   help="no new request after S seconds of a run (default 120)")
    p.add_argument("--prompt-tokens", type=_range, default=(32, 256), metavar="LO,HI",
                   help="prompt lengths, uniform on LO..HI (default 32,256)")
    p.add_argument("--output-tokens", type=_range, default=(8, 64), metavar="LO,HI",
                   help="output lengths, uniform on LO..HI, pinned with ignore_eos (default 8,64)")
    p.add_argument("--seed", type=int, default=0, help="seed of arrivals and lengths (default 0)")
    p.add_argument("--concurrency", type=positive_int, default=64, metavar="N",
                   help="client connections at most in flight (default 64)")
    p.add_argument("--request-timeout", type=positive_float, default=300.0, metavar="S",
                   help="timeout of one request (default 300)")
    p.add_argument("--tick-seconds", type=positive_float, default=1.0, metavar="S",
                   help="sampling interval of GET /metrics (default 1.0)")
    eng = p.add_argument_group("server flags (started with --serve; with --endpoint, give the "
                               "ones it was started with so that meta.json records them)")
    eng.add_argument("--max-num-seqs", type=positive_int, metavar="N", help="default 16 with --serve")
    eng.add_argument("--max-model-len", type=positive_int, metavar="N",
                     help="default 1024 with --serve")
    eng.add_argument("--max-num-batched-tokens", type=positive_int, metavar="N",
                     help="token budget per step (default 2048 with --serve)")
    eng.add_argument("--kv-cache-gib", type=positive_float, default=1.0, metavar="GIB",
                     help="VLLM_CPU_KVCACHE_SPACE for --serve (default 1)")
    eng.add_argument("--engine-cpus", type=_cpu_list, default=None, metavar="C,C,...",
                     help="with --serve: bind vLLM's engine (its scheduler and CPU worker) to "
                          "these cores and keep the API server and this load generator on the "
                          "others, so that the recorded step times are the engine's, as a GPU "
                          "would separate them; recorded in meta.json (default: vLLM's own "
                          "binding)")
    p.set_defaults(func=cmd_record)

    q = tsub.add_parser(
        "tiny-model", help="build a tiny random-weight Qwen2 model folder for vLLM's CPU build",
        description="Write a Qwen2 model with random weights (float32) and a locally trained "
        "byte-level BPE tokenizer with a ChatML chat template: a real model for vLLM on a CPU "
        "(the answers are garbage; API, token counts and timings are real). Needs the vllm-cpu "
        "extra.")
    q.add_argument("out", metavar="DIR", help="folder to write (must be absent or empty)")
    q.add_argument("--layers", type=positive_int, default=2, help="decoder layers (default 2)")
    q.add_argument("--hidden", type=positive_int, default=128, help="hidden size (default 128)")
    q.add_argument("--heads", type=positive_int, default=2, help="attention heads (default 2)")
    q.add_argument("--vocab", type=positive_int, default=2048, help="tokenizer size (default 2048)")
    q.add_argument("--seed", type=int, default=0, help="weights and tokenizer seed (default 0)")
    q.add_argument("--overwrite", action="store_true", help="replace a folder that is not empty")
    q.set_defaults(func=cmd_tiny)


__all__ = ["register"]
