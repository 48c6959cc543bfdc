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

from sim.foundation.cli_args import Parser
from sim.foundation.errors import UserError
from sim.foundation.progress import progress_bar, say
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


_GOVERNOR = ("Antony-zdh/Governor @ 6a22a59 (a fork of hao-ai-lab/Dynasor), benchmark/FalseConsensus/"
             "results/governor_v2{,_scale_dev}/*/main/traj/problem_N.json and "
             "*/dense_simple32/probes.csv")
_REASONING_MODELS = {
    "deepseek-r1-distill-qwen-7b": "DeepSeek-R1-Distill-Qwen-7B",
    "deepseek-r1-distill-qwen-32b": "DeepSeek-R1-Distill-Qwen-32B",
    "deepseek-r1-distill-llama-8b": "DeepSeek-R1-Distill-Llama-8B",
    "qwen3-8b": "Qwen3-8B (thinking mode)",
}
#: The reasoning sets: generations/<name>.jsonl + raw/governor/probes_<model>_<dataset>.csv.gz.
REASONING: dict[str, dict] = {}
for _m, _model in _REASONING_MODELS.items():
    for _ds in ("aime24", "amc23", "math500"):
        REASONING[f"{_m}_{_ds}_t0.6_k3"] = {
            "model": _model,
            "decoding": "T=0.6, top_p=0.95, 3 samples (6 on a subset for some models), cap "
                        + ("32,768" if _ds == "aime24" else "16,384") + " new tokens",
            "source": _GOVERNOR,
            "licence": "MIT",
            "tokens": "the run's own decode-token count (the model's tokenizer, exact)",
            "pool_edges": "reasoning",
        }
PROVENANCE.update(REASONING)


def provenance_markdown() -> str:
    """``traces/data/PROVENANCE.md``: where every embedded set comes from (same as its meta)."""
    lines = ["# Provenance of the embedded trace sets", "",
             "Written by `python -m traces.embed`; each set also carries this in its Parquet "
             "metadata (`clearsim traces list`). Numbers only: query ids, dataset, level, "
             "subject, prompt tokens, per-sample completion tokens, correctness and truncation. "
             "The reasoning sets (`*_t0.6_k3`) also hold per-run forced-answer probes (from "
             "raw/governor/probes_<model>_<dataset>.csv.gz, one every 64 tokens): position, answer "
             "class id, certainty flag, verdict graded at import by math-verify against "
             "raw/governor/targets.csv, and answer tokens; never the answer text. Their "
             "metadata key `probes` holds the import report (docs/reasoning-traces.md).",
             "", "| trace set | model | decoding | source | licence | token counts |",
             "|---|---|---|---|---|---|"]
    for name, p in PROVENANCE.items():
        lines.append(f"| {name} | {p['model']} | {p['decoding']} | {p['source']} | "
                     f"{p['licence']} | {p['tokens']} |")
    return "\n".join(lines) + "\n"


def reasoning_sources(governor_dir: str | Path, name: str) -> tuple[Path, Path]:
    """(probes file, targets file) of the reasoning set ``name`` in ``raw/governor``."""
    model_ds = name.removesuffix("_t0.6_k3")
    governor_dir = Path(governor_dir)
    return governor_dir / f"probes_{model_ds}.csv.gz", governor_dir / "targets.csv"


def build_embedded(generations_dir: str | Path, out_dir: str | Path | None = None,
                   governor_dir: str | Path | None = None, only: list[str] | None = None,
                   progress=None) -> list[Path]:
    """Import every known recording in ``generations_dir`` into ``out_dir`` (the package data).

    Reasoning sets also read their probes from ``governor_dir`` (default
    ``generations_dir/../raw/governor``), one grading cache serving all of them.  ``progress``
    counts the sets imported, as in :func:`sim.experiments.sweep.sweep` (:mod:`sim.foundation.progress`).
    """
    generations_dir = Path(generations_dir)
    governor_dir = Path(governor_dir) if governor_dir else generations_dir.parent / "raw" / "governor"
    out = Path(out_dir) if out_dir else embedded_dir()
    unknown = sorted(set(only or ()) - set(PROVENANCE))
    if unknown:
        raise UserError(f"unknown set {', '.join(unknown)}: choose from {', '.join(PROVENANCE)}",
                        field="--only")
    names = [name for name in PROVENANCE if not only or name in only]
    # Every source is found before anything is written (a rebuild never stops half-way for a
    # missing file).
    if not generations_dir.is_dir():
        raise UserError("not a folder: give shared/data/generations", where=str(generations_dir))
    needed = [generations_dir / f"{name}.jsonl" for name in names]
    needed += [f for name in names if name in REASONING for f in reasoning_sources(governor_dir, name)]
    missing = [str(f) for f in dict.fromkeys(needed) if not f.is_file()]
    if missing:
        raise UserError(f"missing {len(missing)} source file(s), first {missing[0]}: the "
                        "generations folder (and --governor for the reasoning sets' probes) must "
                        "hold every set chosen; --only picks fewer", where=str(generations_dir))
    written = []
    grader = None
    with progress_bar(len(names), desc="traces.embed", noun="set", progress=progress) as bar:
        for name in names:
            src = generations_dir / f"{name}.jsonl"
            meta = {"recorded_by": "public source", **PROVENANCE[name]}
            if name in REASONING:
                from traces.probes import ProbeGrader  # noqa: PLC0415 - needs math-verify

                grader = grader or ProbeGrader()
                probes, targets = reasoning_sources(governor_dir, name)
                ts = import_generations(src, name, meta, probes=probes, targets=targets,
                                        grader=grader)
            else:
                ts = import_generations(src, name, meta)
            written.append(ts.write(out / f"{name}.parquet"))
            say(progress, f"{name}: {ts.n_queries} queries")
            bar.update(1)
    (out / "PROVENANCE.md").write_text(provenance_markdown(), encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m traces.embed", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generations_dir", help="folder holding the generations/*.jsonl recordings")
    ap.add_argument("--out", default=None, help="output folder (default: the package's traces/data)")
    ap.add_argument("--governor", default=None,
                    help="folder of the probes_*.csv.gz and targets.csv files "
                    "(default: GENERATIONS_DIR/../raw/governor)")
    ap.add_argument("--only", default=None,
                    help="comma-separated set names (default: all): " + ", ".join(PROVENANCE))
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="show progress over the sets on stderr (default: on): a bar on a "
                    "terminal, otherwise a line every 10 s or 10%% of the sets")
    args = ap.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    try:
        for p in build_embedded(args.generations_dir, args.out, args.governor, only, args.progress):
            print(p)
    except UserError as exc:
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
