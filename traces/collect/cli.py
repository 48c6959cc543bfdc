"""``clearsim traces collect``: the command line over :func:`traces.collect.collect`.

``register(traces_subparsers)`` adds the subcommand to the ``clearsim traces`` group; the parser's
``func`` maps the options one to one onto :func:`~traces.collect.collect`'s keyword arguments
and returns the exit code.  A :class:`~sim.foundation.errors.UserError` propagates to the main CLI, which
prints its one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from traces.collect.problems import KNOWN_SETS
from traces.collect.prompting import DEFAULT_SYSTEM

EPILOG = """\
examples:
  clearsim traces collect --model Qwen/Qwen2.5-Math-7B-Instruct --problems math500 \\
      --samples 16 --temperature 0.7 --top-p 0.8 --max-tokens 4096 --seed 0 --name qwen-math500
  clearsim traces collect --endpoint http://127.0.0.1:8000/v1 --problems gsm8k --limit 50
  clearsim traces collect --model MODEL --problems my.jsonl --question-field prompt \\
      --answer-field solution --grader mypkg.grade:check

Rerun the same command after an interruption to resume; see docs/collect-on-gpu.md.
"""

#: The CLI option (dest) for each keyword argument of collect(), in the order of the help.
OPTIONS = (
    "problems", "model", "endpoint", "name", "out", "samples", "temperature", "top_p",
    "max_tokens", "seed", "system", "grader", "revision", "problems_dir", "question_field",
    "answer_field", "id_field", "dataset_name", "limit", "chunk_size", "restart",
    "tensor_parallel_size", "max_num_seqs", "max_model_len", "max_num_batched_tokens",
    "gpu_memory_utilization", "dtype", "concurrency", "retries", "retry_backoff",
    "request_timeout", "api_key", "gpu", "tick_seconds",
)


def register(traces_subparsers) -> argparse.ArgumentParser:
    """Add ``collect`` to the ``clearsim traces`` subparsers; returns its parser."""
    p = traces_subparsers.add_parser(
        "collect",
        help="record accuracy-vs-tokens traces from a model (vLLM on a GPU, or a server)",
        description=(
            "Sample every problem of a set K times from a model, grade each sample, and write a "
            "clearsim trace set (NAME.parquet, with NAME.samples.jsonl and the calibration "
            "files NAME.serving/session-NN/) into $CLEARSIM_HOME/traces or --out. "
            "Needs the optional extra: pip install 'clearsim[collect]'."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to sample from (one of)")
    src.add_argument("--model", help="model name or path to generate with vLLM on this machine's "
                     "GPU(s); with --endpoint, the served model to use when it serves several")
    src.add_argument("--endpoint", metavar="URL", help="base URL http://HOST:PORT/v1 of a running "
                     "OpenAI-compatible server (e.g. `vllm serve`) to collect from instead")
    src.add_argument("--revision", help="model revision (branch, tag or commit) for --model")

    prob = p.add_argument_group("problems")
    prob.add_argument("--problems", required=True, metavar="SET|PATH",
                      help=f"a named set ({', '.join(sorted(KNOWN_SETS))}) or a JSONL file with "
                           "one problem per line")
    prob.add_argument("--problems-dir", metavar="DIR", help="folder holding the named sets' "
                      "files (gsm8k_test.jsonl, math500_test.jsonl, aime24.jsonl, amc23.jsonl); "
                      "default $CLEARSIM_PROBLEMS_DIR, then the Hugging Face hub via `datasets`")
    prob.add_argument("--question-field", metavar="FIELD",
                      help="JSON field holding the question (default: the set's, or 'question')")
    prob.add_argument("--answer-field", metavar="FIELD",
                      help="JSON field holding the reference answer (default: the set's, or "
                           "'answer')")
    prob.add_argument("--id-field", metavar="FIELD",
                      help="JSON field with a unique id per problem (default: the row index)")
    prob.add_argument("--dataset-name", metavar="NAME", help="dataset label in the trace and the "
                      "query ids NAME/ID (default: the set's name or the file's stem)")
    prob.add_argument("--limit", type=int, metavar="N", help="only the first N problems "
                      "(a quick check before a long run)")

    smp = p.add_argument_group("sampling")
    smp.add_argument("--samples", type=int, default=16, metavar="K",
                     help="samples per problem, SamplingParams(n=K) (default 16)")
    smp.add_argument("--temperature", type=float, default=0.7, help="default 0.7")
    smp.add_argument("--top-p", type=float, default=0.8, help="default 0.8")
    smp.add_argument("--max-tokens", type=int, default=4096, metavar="N",
                     help="cap on new tokens per sample (default 4096); lowered per problem to "
                          "fit the model's context window, which the trace records")
    smp.add_argument("--seed", type=int, default=0,
                     help="run seed; each problem's seed derives from it and its id (default 0)")
    smp.add_argument("--system", default=DEFAULT_SYSTEM, metavar="TEXT",
                     help="system prompt ('' for none); default asks for the final answer in "
                          "\\boxed{}")
    smp.add_argument("--grader", metavar="math|numeric|MODULE:FUNC",
                     help="math (math-verify equivalence; default for math500, aime24, amc23 and "
                          "JSONL files), numeric (exact number; default for gsm8k), or a hook "
                          "MODULE:FUNC / file.py:FUNC called as FUNC(completion, reference) -> "
                          "bool or (answer, bool)")

    outg = p.add_argument_group("output and resume")
    outg.add_argument("--name", help="trace set name (default MODEL_PROBLEMS_tT_kK)")
    outg.add_argument("--out", metavar="PATH.parquet",
                      help="trace file to write (default $CLEARSIM_HOME/traces/NAME.parquet); "
                           "sidecars go next to it")
    outg.add_argument("--chunk-size", type=int, default=128, metavar="N",
                      help="problems per generate call and per checkpoint (default 128)")
    outg.add_argument("--restart", action="store_true",
                      help="discard an earlier checkpoint or result of this name and start over")

    eng = p.add_argument_group("vLLM engine (--model only; unset means vLLM's default)")
    eng.add_argument("--tensor-parallel-size", type=int, metavar="N", help="GPUs per model")
    eng.add_argument("--max-num-seqs", type=int, metavar="N",
                     help="max sequences per batch (the H100 preset assumes 256)")
    eng.add_argument("--max-model-len", type=int, metavar="N", help="context window in tokens")
    eng.add_argument("--max-num-batched-tokens", type=int, metavar="N",
                     help="token budget per engine step (chunked prefill)")
    eng.add_argument("--gpu-memory-utilization", type=float, metavar="F",
                     help="fraction of GPU memory vLLM may use (vLLM default 0.9)")
    eng.add_argument("--dtype", help="weights and activations dtype, e.g. bfloat16")

    ep = p.add_argument_group("server (--endpoint only)")
    ep.add_argument("--concurrency", type=int, default=64, metavar="N",
                    help="requests in flight at once (default 64)")
    ep.add_argument("--retries", type=int, default=5, metavar="N",
                    help="retries of a failed request, with exponential backoff (default 5)")
    ep.add_argument("--retry-backoff", type=float, default=1.0, metavar="SECONDS",
                    help="first backoff delay, doubled per retry (default 1.0)")
    ep.add_argument("--request-timeout", type=float, default=1800.0, metavar="SECONDS",
                    help="socket timeout of one request (default 1800)")
    ep.add_argument("--api-key", help="bearer token, if the server was started with --api-key")
    ep.add_argument("--gpu", help="the server's GPU, recorded in provenance (e.g. 'H100 SXM')")

    p.add_argument("--tick-seconds", type=float, default=1.0, metavar="SECONDS",
                   help="sampling interval of the engine-load time series (default 1.0)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Call :func:`traces.collect.collect` with the parsed options; 0 on success."""
    from traces.collect.collector import collect  # noqa: PLC0415 - keeps `clearsim` startup light

    kwargs = {key: getattr(args, key) for key in OPTIONS}
    problems = kwargs.pop("problems")
    result = collect(problems, **kwargs, log=lambda msg: print(f"[collect] {msg}", file=sys.stderr))
    from traces.registry import user_dir  # noqa: PLC0415

    show = result.name if result.trace_path.parent == user_dir() else str(result.trace_path)
    print(
        f"{result.name}: {result.trace_set.n_queries} queries, written to {result.trace_path}\n"
        f"  per-sample answers: {result.samples_path}\n"
        f"  calibration runs:   {result.serving_dir}/session-*\n"
        f"check it with: clearsim traces show {show}"
    )
    return 0
