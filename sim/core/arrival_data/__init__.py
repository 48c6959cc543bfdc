"""Embedded real arrival traces (numbers only), so replay scenarios run from a plain install.

Each trace is a Parquet file with ``arrival_s`` (seconds from the trace's first request),
``input_tokens`` and ``output_tokens``, and its provenance in the file's metadata (key
``clearsim``).  ``python -m sim.core.arrival_data PATH/TO/shared/data/arrivals`` rebuilds them from
the public files; a test checks the shipped files equal a fresh build.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.foundation.cli_args import Parser
from sim.foundation.errors import UserError
from sim.foundation.files import write_atomic

_AZURE = ("Azure/AzurePublicDataset @ b469a113cedca53ddc3bdea71a143dc4b7d8700c, "
          "data/AzureLLMInferenceTrace_{}.csv")

#: alias -> (source file name in shared/data/arrivals, provenance)
SOURCES: dict[str, tuple[str, dict]] = {
    "azure-conv": ("azure_llm_2023_conv.csv", {
        "what": "Azure LLM inference trace 2023, conversation: 19,366 requests over ~1 h",
        "source": _AZURE.format("conv"), "licence": "CC-BY-4.0",
        "cite": "Patel et al., Splitwise: Efficient Generative LLM Inference Using Phase "
                "Splitting, ISCA 2024"}),
    "azure-code": ("azure_llm_2023_code.csv", {
        "what": "Azure LLM inference trace 2023, code: 8,819 requests over ~1 h, very bursty",
        "source": _AZURE.format("code"), "licence": "CC-BY-4.0",
        "cite": "Patel et al., Splitwise, ISCA 2024"}),
    "mooncake-conversation": ("mooncake_fast25_conversation_trace.jsonl", {
        "what": "Mooncake FAST'25 conversation trace: 12,031 requests over ~1 h (ms timestamps; "
                "prefix hash ids dropped)",
        "source": "kvcache-ai/Mooncake @ 3b5a594133958449a1feaf1c9e0fc1b553e34a28, "
                  "FAST25-release/traces/conversation_trace.jsonl",
        "licence": "Apache-2.0",
        "cite": "Qin et al., Mooncake, FAST 2025"}),
}


def data_dir() -> Path:
    return Path(str(resources.files("sim.core.arrival_data")))


def read_source(path: Path) -> pd.DataFrame:
    """Arrival seconds from the first request and token counts of a public trace file."""
    if path.suffix == ".jsonl":
        df = pd.read_json(path, lines=True)
        t = df["timestamp"].to_numpy(dtype=float) / 1000.0
        inp, out = df["input_length"], df.get("output_length")
    else:
        df = pd.read_csv(path)
        t = pd.to_datetime(df["TIMESTAMP"]).astype("int64").to_numpy() / 1e9
        inp, out = df["ContextTokens"], df.get("GeneratedTokens")
    order = np.argsort(t, kind="stable")
    out = np.zeros(len(t), dtype=np.int32) if out is None else out.to_numpy(dtype=np.int32)
    return pd.DataFrame({
        "arrival_s": (t - t.min())[order],
        "input_tokens": inp.to_numpy(dtype=np.int32)[order],
        "output_tokens": out[order],  # 0 where the file has no output lengths
    })


def build(arrivals_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Rebuild every embedded trace from ``arrivals_dir`` into ``out_dir`` (default: the
    package's own folder).  Every source is found and read before anything is written, and each
    file is written atomically, so a missing or broken source leaves the old files untouched."""
    arrivals_dir = Path(arrivals_dir)
    if not arrivals_dir.is_dir():
        raise UserError("not a folder: give the folder holding the public arrival traces "
                        "(shared/data/arrivals)", where=str(arrivals_dir))
    missing = [fname for fname, _ in SOURCES.values() if not (arrivals_dir / fname).is_file()]
    if missing:
        raise UserError(f"missing {', '.join(missing)}: this folder must hold every source "
                        f"trace ({', '.join(f for f, _ in SOURCES.values())})",
                        where=str(arrivals_dir))
    out = Path(out_dir) if out_dir else data_dir()
    if out.exists() and not out.is_dir():
        raise UserError("the output is a file, not a folder", where=str(out))
    tables = {}
    for alias, (fname, prov) in SOURCES.items():
        try:
            df = read_source(arrivals_dir / fname)
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise UserError(f"not the public trace this file should be ({exc.__class__.__name__}: "
                            f"{str(exc)[:80]}); restore it from the source named in its "
                            "provenance", where=str(arrivals_dir / fname)) from None
        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = {"alias": alias, "source_file": fname, **prov}
        tables[alias] = table.replace_schema_metadata({b"clearsim": json.dumps(meta, sort_keys=True)})
    written = []
    for alias, table in tables.items():
        path = out / f"{alias}.parquet"
        write_atomic(path, lambda tmp, table=table: pq.write_table(table, tmp, compression="zstd"))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m sim.core.arrival_data``: bad input is one line on stderr, exit 2."""
    ap = Parser(prog="python -m sim.core.arrival_data",
                description="Rebuild the embedded arrival traces (numbers only: arrival "
                            "seconds, input and output tokens, with provenance) from the public "
                            "trace files: " + ", ".join(f for f, _ in SOURCES.values()) + ".")
    ap.add_argument("arrivals_dir", help="folder holding the public traces (shared/data/arrivals)")
    ap.add_argument("out_dir", nargs="?", default=None,
                    help="where to write the Parquet files (default: the package's own folder)")
    args = ap.parse_args(argv)
    try:
        for path in build(args.arrivals_dir, args.out_dir):
            print(path)
    except UserError as exc:
        print(f"{ap.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
