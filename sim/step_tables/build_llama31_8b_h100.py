"""Build ``llama-3.1-8b-h100-eager.csv`` (step time vs tokens in the step) from LLMServingSim's
per-layer H100 profile of Llama-3.1-8B (casys-kaist/LLMServingSim @ 5daddb21, MIT,
profiler/v0/perf_models/H100/meta-llama/Llama-3.1-8B/tp1/layers.csv, copied to
``shared/data/serving/profiling/llmservingsim_v0_H100_Llama-3.1-8B_tp1_layers.csv``).

step(tokens) = embedding + 32 x (every decoder-layer op) + final norm + lm_head, with the
profile's ``kv_cache = 0`` rows (no attention-context cost); the profile looks like eager mode
(no CUDA graphs), so it is slower than vLLM's default at small batches.  Kept at powers of two
and a few points between, which is what the table step model interpolates.

    python sim/step_tables/build_llama31_8b_h100.py ../shared/data/serving/profiling/llmservingsim_v0_H100_Llama-3.1-8B_tp1_layers.csv
"""

import sys
from pathlib import Path

import pandas as pd

LAYERS = 32
ONCE = {"embedding", "final_layernorm", "lm_head"}


def main(src: str) -> None:
    d = pd.read_csv(src)
    d = d[(d["kv_cache"] == 0) & (d["tp_size"] == 1)]
    mult = d["layer_name"].map(lambda n: 1 if n in ONCE else LAYERS)
    step = (d["latency(ns)"] * mult).groupby(d["input"]).sum() / 1e6  # ms
    points = sorted({1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048}
                    & set(step.index))
    out = Path(__file__).with_name("llama-3.1-8b-h100-eager.csv")
    lines = ["tokens,step_ms"] + [f"{t},{step[t]:.4f}" for t in points]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out} ({len(points)} rows)")


if __name__ == "__main__":
    main(sys.argv[1])
