"""Build the embedded trace sets from the public recordings (``shared/data/generations``).

Run ``python -m traces.embed PATH/TO/generations`` to regenerate ``traces/data/``.  Only
numbers are written (ids, dataset, level, subject, prompt tokens, per-sample completion tokens
and correctness flags), each set carrying the provenance below; the recordings' text never
enters the package.  A test checks the shipped files equal a fresh import.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from traces.importers import import_generations
from traces.registry import embedded_dir

_TOKENS = "completion tokens counted with the Qwen2/Qwen2.5 byte-level BPE"
_PRIME = (
    "PRIME-RL/PRIME @ 18ad596 (git history), eval/scripts/eval/Qwen25-Math/evaluation/outputs/"
)

#: Provenance of each public recording, from shared/data/README.md.
PROVENANCE: dict[str, dict] = {
    "qwen25-math-instruct_math100_t0.7_k8": {
        "model": "Qwen2.5-Math-Instruct (size not stated)",
        "decoding": "T=0.7, top_p=0.8, 8 samples",
        "source": "QwenLM/Qwen2.5-Math @ a45202b, evaluation/data/eval_rm_maj_example/math_cot_100.jsonl",
        "licence": "MIT (evaluation/)",
        "tokens": _TOKENS + " (exact for this model)",
    },
    "gpt-4_gsm8k_t0.7_k6": {
        "model": "GPT-4 (2023 API)",
        "decoding": "sampled, 6 samples (2 few-shot CoT prompts x 3)",
        "source": "MurongYue/LLM_MoT_cascade @ 8db97e6, GPT4_result/gsm_cot{1,2}.json",
        "licence": "none stated: numbers only, never the text",
        "tokens": _TOKENS + " (an approximation, within about 10%, for GPT-4)",
    },
}
for _ds in ("gaokao2023en", "minerva_math", "olympiadbench"):
    PROVENANCE[f"qwen2.5-math-7b-instruct_{_ds}_greedy"] = {
        "model": "Qwen2.5-Math-7B-Instruct",
        "decoding": "greedy, max 2048 new tokens, 1 sample",
        "source": _PRIME + ".../Qwen2.5-Math-7B-Instruct/math_eval/",
        "licence": "Apache-2.0",
        "tokens": _TOKENS + " (exact for this model)",
    }
    PROVENANCE[f"meta-llama-3.1-8b-instruct_{_ds}_greedy"] = {
        "model": "Llama-3.1-8B-Instruct",
        "decoding": "greedy, max 2048 new tokens, 1 sample",
        "source": "PRIME-RL/PRIME @ 18ad596 (git history), "
        ".../o1_results_1205/Meta-Llama-3.1-8B-Instruct/qwen_math/",
        "licence": "Apache-2.0",
        "tokens": _TOKENS + " (an approximation, within about 10%, for Llama)",
    }


def provenance_markdown() -> str:
    """``traces/data/PROVENANCE.md``: where every embedded set comes from (same as its meta)."""
    lines = ["# Provenance of the embedded trace sets", "",
             "Written by `python -m traces.embed`; each set also carries this in its Parquet "
             "metadata (`clearsim traces list`). Numbers only: query ids, dataset, level, "
             "subject, prompt tokens, per-sample completion tokens, correctness and truncation.",
             "", "| trace set | model | decoding | source | licence | token counts |",
             "|---|---|---|---|---|---|"]
    for name, p in PROVENANCE.items():
        lines.append(f"| {name} | {p['model']} | {p['decoding']} | {p['source']} | "
                     f"{p['licence']} | {p['tokens']} |")
    return "\n".join(lines) + "\n"


def build_embedded(generations_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Import every known recording in ``generations_dir`` into ``out_dir`` (the package data)."""
    generations_dir = Path(generations_dir)
    out = Path(out_dir) if out_dir else embedded_dir()
    written = []
    for name, prov in PROVENANCE.items():
        src = generations_dir / f"{name}.jsonl"
        ts = import_generations(src, name, {"recorded_by": "public source", **prov})
        written.append(ts.write(out / f"{name}.parquet"))
    (out / "PROVENANCE.md").write_text(provenance_markdown(), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces.embed", description=__doc__)
    ap.add_argument("generations_dir", help="folder holding the generations/*.jsonl recordings")
    ap.add_argument("--out", default=None, help="output folder (default: the package's traces/data)")
    args = ap.parse_args(argv)
    for p in build_embedded(args.generations_dir, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
