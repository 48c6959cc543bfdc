"""How long will a collection take on a GPU?  The runbook's estimate, reproducible.

``python -m sim.experiments.collect_estimate`` replays a collection's generate calls through an engine
preset's step-time model (``sim/presets.yaml``; by default ``qwen2.5-math-7b-h100``: ``step_us =
7051.8 + 19.538 * prefill tokens + 25.432 * decoding sequences``, from
``shared/data/serving/ANALYSIS.md`` section 6).  Each chunk of problems is one ``LLM.generate``
call: its ``chunk x samples`` sequences arrive together, at most ``max_num_seqs`` run at once,
each step prefills newly admitted prompts within ``max_num_batched_tokens`` and decodes one token
per running sequence, and the chunk ends when its last sequence does (the drain the next chunk
cannot fill).  Completion lengths are drawn from a recorded trace set; prompts are counted in full
for every sample (no prefix caching: a slight overestimate).  Model download, load and CUDA-graph
capture are not included.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def chunk_seconds(prompts: np.ndarray, lengths: np.ndarray, *, c0: float, c1: float, c2: float,
                  max_num_seqs: int, max_num_batched_tokens: int) -> float:
    """Seconds for one generate call whose sequences all arrive at time zero."""
    t_us, nxt, n = 0.0, 0, len(prompts)
    left = np.empty(0, dtype=np.int64)  # decode tokens still due, per running sequence
    while nxt < n or len(left):
        room, budget, take = max_num_seqs - len(left), max_num_batched_tokens - len(left), 0
        while nxt + take < n and take < room and prompts[nxt + take] <= budget:
            budget -= prompts[nxt + take]
            take += 1
        prefill = int(prompts[nxt : nxt + take].sum())
        t_us += c0 + c1 * prefill + c2 * len(left)
        left = left - 1  # one decode token each; a prefill step emits the first token
        left = np.concatenate([left[left > 0], lengths[nxt : nxt + take] - 1])
        left = left[left > 0]
        nxt += take
    return t_us / 1e6


def estimate(*, preset: dict, prompt_tokens: np.ndarray, length_pool: np.ndarray, queries: int,
             samples: int, max_tokens: int, chunk_size: int, max_num_seqs: int,
             max_num_batched_tokens: int, context: int | None, seed: int = 0) -> tuple[float, int]:
    """(seconds of generation, tokens generated) for one collection."""
    rng = np.random.default_rng(seed)
    prompts_q = rng.choice(prompt_tokens, size=queries)
    total, tokens = 0.0, 0
    for start in range(0, queries, chunk_size):
        prompts = np.repeat(prompts_q[start : start + chunk_size], samples).astype(np.int64)
        cap = np.full(len(prompts), max_tokens)
        if context:
            cap = np.minimum(cap, context - prompts)
        lengths = np.minimum(rng.choice(length_pool, size=len(prompts)), cap).astype(np.int64)
        tokens += int(lengths.sum())
        total += chunk_seconds(prompts, lengths, c0=preset["c0_us"], c1=preset["c1_us"],
                               c2=preset["c2_us"], max_num_seqs=max_num_seqs,
                               max_num_batched_tokens=max_num_batched_tokens)
    return total, tokens


def main(argv: list[str] | None = None) -> int:
    from sim.core.presets import presets  # noqa: PLC0415
    from traces.registry import load_trace_set  # noqa: PLC0415

    ap = argparse.ArgumentParser(prog="python -m sim.experiments.collect_estimate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen2.5-math-7b-h100")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--chunk-size", type=int, nargs="+", default=[128])
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--system-tokens", type=int, default=30,
                    help="tokens the system prompt and chat template add to a question")
    ap.add_argument("--lengths", nargs="+", default=[
        "qwen25-math-instruct_math100_t0.7_k8", "qwen2.5-math-7b-instruct_olympiadbench_greedy",
        "cap"], help="trace sets whose completion lengths to draw, or 'cap' (all truncated)")
    args = ap.parse_args(argv)
    pre = presets()[args.preset]
    questions = load_trace_set("qwen25-math-instruct_math100_t0.7_k8").prompt_tokens
    prompts = questions + args.system_tokens
    print(f"{args.preset}: step_us = {pre['c0_us']} + {pre['c1_us']} * prefill + {pre['c2_us']} "
          f"* decode_seqs; {args.queries} problems x {args.samples} samples, max "
          f"{args.max_tokens} tokens, max_num_seqs {args.max_num_seqs}")
    for name in args.lengths:
        pool = np.array([10**9]) if name == "cap" else load_trace_set(name).sample_tokens
        label = "every sample runs to the cap" if name == "cap" else \
            f"lengths of {name} (mean {pool.mean():.0f})"
        for chunk in args.chunk_size:
            secs, toks = estimate(
                preset=pre, prompt_tokens=prompts, length_pool=pool, queries=args.queries,
                samples=args.samples, max_tokens=args.max_tokens, chunk_size=chunk,
                max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                context=pre.get("max_model_len"))
            print(f"  {label}, chunk {chunk}: {secs / 60:.1f} min generating, "
                  f"{toks / 1e6:.2f} M tokens ({toks / secs:,.0f} tok/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
