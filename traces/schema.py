"""The trace format: per-query recorded samples, numbers only.

A :class:`TraceSet` holds, for each query, what a server knows before generation (id, dataset,
level, subject, prompt tokens) and the recorded samples of the model's answers: each sample's
completion length in tokens, whether it was graded correct, and whether it hit the recording
cap.  Samples are stored flat with CSR offsets so that curve maths over many queries is
vectorised (see :mod:`traces.curves`).

On disk a trace set is one Parquet file: one row per query with list columns for the samples,
and the set's name and provenance as JSON in the file's key-value metadata (key ``clearsim``).
No problem text and no model output is ever stored.

Reasoning sets may also carry *probes* (optional, ``None`` otherwise): forced answers taken
every so many tokens of a run, each reduced to numbers at import (its position, an answer class
id within the query, the source's certainty flag, the grader's verdict and the forced answer's
own length).  They are flat over all probes with CSR offsets over the flat samples, so sample
``s`` owns ``probe_*[probe_offsets[s]:probe_offsets[s+1]]`` ordered by position.  On disk they
are per-query list columns (the query's probes, sample after sample) plus ``sample_probes``
(probes per sample); files without these columns read as sets without probes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.foundation.errors import UserError
from sim.foundation.files import write_atomic

FORMAT_VERSION = 1
METADATA_KEY = b"clearsim"

#: Level is optional in the sources; -1 stands for "not stated".
UNKNOWN_LEVEL = -1
#: The recording cap is optional; -1 stands for "not stated".
UNKNOWN_CAP = -1

#: The optional per-probe arrays, their dtypes and Parquet types (see the module docstring).
PROBE_FIELDS: dict[str, tuple[type, pa.DataType]] = {
    "probe_position": (np.int32, pa.int32()),
    "probe_answer": (np.int32, pa.int32()),
    "probe_certain": (np.bool_, pa.bool_()),
    "probe_correct": (np.bool_, pa.bool_()),
    "probe_out_tokens": (np.int32, pa.int32()),
}
#: Keys of a sample's ``probes`` dict in :meth:`TraceSet.from_records`, per probe field.
PROBE_RECORD_KEYS = {f: f.removeprefix("probe_") for f in PROBE_FIELDS}


@dataclass(frozen=True, eq=False)
class TraceSet:
    """Recorded samples of many queries, with provenance.

    Per-query arrays have length ``n_queries``; ``sample_*`` arrays are flat, query ``i`` owning
    ``sample_*[offsets[i]:offsets[i+1]]``.  Every query has at least one sample.
    """

    name: str
    meta: dict
    query_id: np.ndarray  # str objects
    dataset: np.ndarray  # str objects
    level: np.ndarray  # int64, UNKNOWN_LEVEL when not stated
    subject: np.ndarray  # str objects or None
    prompt_tokens: np.ndarray  # int64
    max_tokens: np.ndarray  # int64, UNKNOWN_CAP when not stated
    offsets: np.ndarray  # int64, length n_queries + 1
    sample_tokens: np.ndarray  # int64
    sample_correct: np.ndarray  # bool
    sample_truncated: np.ndarray  # bool
    # optional probes (None for sets without them), see the module docstring
    probe_offsets: np.ndarray | None = None  # int64, length n_samples + 1
    probe_position: np.ndarray | None = None  # int32, reasoning tokens before the probe
    probe_answer: np.ndarray | None = None  # int32, answer class id within the query; -1 = none
    probe_certain: np.ndarray | None = None  # bool, the source's certainty flag
    probe_correct: np.ndarray | None = None  # bool, graded at import against the reference
    probe_out_tokens: np.ndarray | None = None  # int32, tokens of the forced answer itself
    _cache: dict = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- shape
    @property
    def n_queries(self) -> int:
        return len(self.query_id)

    @property
    def samples_per_query(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def sample_query(self) -> np.ndarray:
        """Index of the query each flat sample belongs to."""
        if "sample_query" not in self._cache:
            self._cache["sample_query"] = np.repeat(
                np.arange(self.n_queries, dtype=np.int64), self.samples_per_query
            )
        return self._cache["sample_query"]

    @property
    def has_probes(self) -> bool:
        return self.probe_offsets is not None

    def probe_arrays(self) -> dict:
        """The optional probe fields as keyword arguments (all None without probes)."""
        return {"probe_offsets": self.probe_offsets,
                **{f: getattr(self, f) for f in PROBE_FIELDS}}

    @property
    def probe_sample(self) -> np.ndarray:
        """Index of the flat sample each flat probe belongs to (needs probes)."""
        if "probe_sample" not in self._cache:
            self._cache["probe_sample"] = np.repeat(
                np.arange(len(self.sample_tokens), dtype=np.int64), np.diff(self.probe_offsets)
            )
        return self._cache["probe_sample"]

    def datasets(self) -> list[str]:
        return sorted(set(self.dataset.tolist()))

    # ------------------------------------------------------------ building
    @classmethod
    def from_records(cls, name: str, meta: dict, records: list[dict]) -> "TraceSet":
        """Build from already-validated per-query dicts (see :mod:`traces.importers`)."""
        counts = np.array([len(r["samples"]) for r in records], dtype=np.int64)
        offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        flat = [s for r in records for s in r["samples"]]
        probes = {}
        if any("probes" in s for s in flat):
            # a sample without a "probes" entry has none; the importer decides if that is allowed
            got = [s.get("probes") or {} for s in flat]
            n = np.array([len(g.get("position", ())) for g in got], dtype=np.int64)
            probes["probe_offsets"] = np.zeros(len(flat) + 1, dtype=np.int64)
            np.cumsum(n, out=probes["probe_offsets"][1:])
            for f, (dt, _) in PROBE_FIELDS.items():
                key = PROBE_RECORD_KEYS[f]
                parts = [np.asarray(g.get(key, ()), dtype=dt) for g in got]
                if any(len(a) != k for a, k in zip(parts, n)):
                    raise ValueError(f"probe field {key!r} is not as long as 'position'")
                probes[f] = np.concatenate(parts) if parts else np.zeros(0, dtype=dt)
        return cls(
            name=name,
            meta=dict(meta),
            query_id=np.array([r["query_id"] for r in records], dtype=object),
            dataset=np.array([r["dataset"] for r in records], dtype=object),
            level=np.array(
                [UNKNOWN_LEVEL if r.get("level") is None else r["level"] for r in records],
                dtype=np.int64,
            ),
            subject=np.array([r.get("subject") for r in records], dtype=object),
            prompt_tokens=np.array([r["prompt_tokens"] for r in records], dtype=np.int64),
            max_tokens=np.array(
                [UNKNOWN_CAP if r.get("max_tokens") is None else r["max_tokens"] for r in records],
                dtype=np.int64,
            ),
            offsets=offsets,
            sample_tokens=np.array([s["tokens"] for s in flat], dtype=np.int64),
            sample_correct=np.array([s["correct"] for s in flat], dtype=bool),
            sample_truncated=np.array([s.get("truncated", False) for s in flat], dtype=bool),
            **probes,
        )

    @classmethod
    def concat(cls, name: str, parts: list["TraceSet"]) -> "TraceSet":
        """Stack several sets into one (query ids are prefixed by nothing: they must differ)."""
        if len(parts) == 1:
            return parts[0]
        offsets = [np.zeros(1, dtype=np.int64)]
        base = 0
        for p in parts:
            offsets.append(p.offsets[1:] + base)
            base += int(p.offsets[-1])
        probes = {}
        # probes survive only if every part has them: a part without probes cannot be given
        # forced answers, and the stacked set then has none (forced-answer refuses it by name)
        if all(p.has_probes for p in parts):
            poff = [np.zeros(1, dtype=np.int64)]
            base = 0
            for p in parts:
                poff.append(p.probe_offsets[1:] + base)
                base += int(p.probe_offsets[-1])
            probes["probe_offsets"] = np.concatenate(poff)
            for f in PROBE_FIELDS:
                probes[f] = np.concatenate([getattr(p, f) for p in parts])
        return cls(
            name=name,
            meta={"parts": [{"name": p.name, **p.meta} for p in parts]},
            query_id=np.concatenate([p.query_id for p in parts]),
            dataset=np.concatenate([p.dataset for p in parts]),
            level=np.concatenate([p.level for p in parts]),
            subject=np.concatenate([p.subject for p in parts]),
            prompt_tokens=np.concatenate([p.prompt_tokens for p in parts]),
            max_tokens=np.concatenate([p.max_tokens for p in parts]),
            offsets=np.concatenate(offsets),
            sample_tokens=np.concatenate([p.sample_tokens for p in parts]),
            sample_correct=np.concatenate([p.sample_correct for p in parts]),
            sample_truncated=np.concatenate([p.sample_truncated for p in parts]),
            **probes,
        )

    def subset(self, rows: np.ndarray) -> "TraceSet":
        """The queries at ``rows`` (indices or boolean mask), samples carried along."""
        rows = np.arange(self.n_queries)[rows]
        counts = self.samples_per_query[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        starts = self.offsets[rows]
        flat = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        probes = {}
        if self.has_probes:
            pcounts = np.diff(self.probe_offsets)[flat]
            poff = np.zeros(len(flat) + 1, dtype=np.int64)
            np.cumsum(pcounts, out=poff[1:])
            pflat = np.repeat(self.probe_offsets[flat] - poff[:-1], pcounts) + np.arange(poff[-1])
            probes["probe_offsets"] = poff
            for f in PROBE_FIELDS:
                probes[f] = getattr(self, f)[pflat]
        return TraceSet(
            name=self.name,
            meta=self.meta,
            query_id=self.query_id[rows],
            dataset=self.dataset[rows],
            level=self.level[rows],
            subject=self.subject[rows],
            prompt_tokens=self.prompt_tokens[rows],
            max_tokens=self.max_tokens[rows],
            offsets=offsets,
            sample_tokens=self.sample_tokens[flat],
            sample_correct=self.sample_correct[flat],
            sample_truncated=self.sample_truncated[flat],
            **probes,
        )

    # ------------------------------------------------------------- storage
    def to_table(self) -> pa.Table:
        def lists(values: np.ndarray, typ: pa.DataType) -> pa.Array:
            return pa.ListArray.from_arrays(
                pa.array(self.offsets, type=pa.int32()), pa.array(values, type=typ)
            )

        table = pa.table(
            {
                "query_id": pa.array(self.query_id.tolist(), type=pa.string()),
                "dataset": pa.array(self.dataset.tolist(), type=pa.string()),
                "level": pa.array(self.level, type=pa.int16()),
                "subject": pa.array(self.subject.tolist(), type=pa.string()),
                "prompt_tokens": pa.array(self.prompt_tokens, type=pa.int32()),
                "max_tokens": pa.array(self.max_tokens, type=pa.int32()),
                "sample_tokens": lists(self.sample_tokens, pa.int32()),
                "sample_correct": lists(self.sample_correct, pa.bool_()),
                "sample_truncated": lists(self.sample_truncated, pa.bool_()),
            }
        )
        if self.has_probes:
            counts = np.diff(self.probe_offsets)
            table = table.append_column("sample_probes", lists(counts, pa.int32()))
            # a query's probes, sample after sample: list offsets are the probe offsets at the
            # query boundaries
            qoff = pa.array(self.probe_offsets[self.offsets], type=pa.int32())
            for f, (_, typ) in PROBE_FIELDS.items():
                table = table.append_column(
                    f, pa.ListArray.from_arrays(qoff, pa.array(getattr(self, f), type=typ))
                )
        meta = {"format_version": FORMAT_VERSION, "name": self.name, "meta": self.meta}
        return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True)})

    def write(self, path: str | os.PathLike) -> Path:
        """Write atomically: a reader never sees a half-written file."""
        table = self.to_table()
        return write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TraceSet":
        path = Path(path)
        if not path.is_file():
            raise UserError("trace file not found", where=str(path))
        try:
            table = pq.read_table(path)
            info = json.loads(table.schema.metadata[METADATA_KEY])
        except (pa.ArrowException, OSError, KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"not a clearsim trace file ({type(exc).__name__}); re-import it with "
                "'clearsim traces import'",
                where=str(path),
            ) from None
        if info.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"trace format version {info.get('format_version')} is not {FORMAT_VERSION}; "
                "re-import it",
                where=str(path),
                field="format_version",
            )

        try:
            return check_trace_content(cls._from_table(table, info), where=str(path))
        except (pa.ArrowException, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(
                f"corrupt trace file ({type(exc).__name__}: {str(exc)[:80]}); re-import it with "
                "'clearsim traces import'",
                where=str(path),
            ) from None

    @classmethod
    def _from_table(cls, table: pa.Table, info: dict) -> "TraceSet":
        def flat(col: str) -> tuple[np.ndarray, np.ndarray]:
            arr = table.column(col).combine_chunks()
            return arr.offsets.to_numpy().astype(np.int64), arr.values.to_numpy(zero_copy_only=False)

        offsets, tokens = flat("sample_tokens")
        off_c, correct = flat("sample_correct")
        off_t, truncated = flat("sample_truncated")
        if not (np.array_equal(offsets, off_c) and np.array_equal(offsets, off_t)):
            raise ValueError("sample_tokens, sample_correct and sample_truncated lists differ in length")
        _finite_ints(tokens, "sample_tokens")
        _finite_ints(table.column("prompt_tokens").to_numpy(zero_copy_only=False), "prompt_tokens")
        probes = {}
        if "sample_probes" in table.column_names:
            missing = [f for f in PROBE_FIELDS if f not in table.column_names]
            _, counts = flat("sample_probes")
            poff = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=poff[1:])
            probes["probe_offsets"] = poff
            for f, (dt, _) in PROBE_FIELDS.items():
                if f in missing:
                    break
                qoff, values = flat(f)
                if len(values) != poff[-1] or not np.array_equal(qoff, poff[offsets]):
                    missing.append(f)
                    break
                probes[f] = values.astype(dt)
            if missing or len(counts) != len(tokens):
                raise ValueError(
                    f"probe columns inconsistent ({', '.join(missing) or 'sample_probes'})")
        return cls(
            name=info["name"],
            meta=info.get("meta", {}),
            query_id=np.array(table.column("query_id").to_pylist(), dtype=object),
            dataset=np.array(table.column("dataset").to_pylist(), dtype=object),
            level=table.column("level").to_numpy().astype(np.int64),
            subject=np.array(table.column("subject").to_pylist(), dtype=object),
            prompt_tokens=table.column("prompt_tokens").to_numpy().astype(np.int64),
            max_tokens=table.column("max_tokens").to_numpy().astype(np.int64),
            offsets=offsets,
            sample_tokens=tokens.astype(np.int64),
            sample_correct=correct.astype(bool),
            sample_truncated=truncated.astype(bool),
            **probes,
        )


def _finite_ints(values: np.ndarray, col: str) -> None:
    """Token counts stored as floats must be whole and finite before the int64 cast (NaN
    would become -2**63)."""
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError(f"column {col} holds NaN or infinite values")
    if values.dtype.kind == "f" and values.size and np.max(np.abs(values)) > 2.0**62:
        raise ValueError(f"column {col} holds values beyond 2**62 tokens")
    if values.dtype.kind not in "fiub":
        raise ValueError(f"column {col} holds {values.dtype} values, not token counts")


def check_trace_content(ts: "TraceSet", where: str | None = None) -> "TraceSet":
    """The one content check of a trace set (every command reading one gets it): at least one
    query, at least one sample per query, non-negative token counts, unique query ids."""
    n = len(ts.query_id)
    if n == 0:
        raise UserError("holds no queries; re-import it", where=where)
    counts = np.diff(ts.offsets)
    if len(ts.offsets) != n + 1 or len(ts.prompt_tokens) != n:
        raise UserError("columns differ in length; re-import it", where=where)
    empty = np.flatnonzero(counts <= 0)
    if empty.size:
        raise UserError(f"query {str(ts.query_id[empty[0]])[:60]!r} has no samples "
                        f"({empty.size} such); every query needs at least one", where=where,
                        field="sample_tokens")
    for col, arr in (("sample_tokens", ts.sample_tokens), ("prompt_tokens", ts.prompt_tokens)):
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            raise UserError(f"row {int(bad[0])}: {int(arr[bad[0]])} is negative; token counts "
                            "must be >= 0", where=where, field=col)
    if len(set(ts.query_id.tolist())) != n:
        raise UserError("the same query_id appears twice; query ids must be unique", where=where,
                        field="query_id")
    return ts
