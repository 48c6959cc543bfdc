"""Resumable collection: the ``NAME.collect/`` folder next to the trace being collected.

* ``state.json``: the *fingerprint* (every argument that changes what is recorded: model,
  revision, problem set and its content hash, sampling parameters, seed, system prompt, grader,
  limit) and one entry per session (when it ran, on what, how many queries it committed).
* ``queries.jsonl``: one committed query per line, appended and fsync'ed after every chunk.

A rerun with the same arguments loads the committed queries and generates only the others, so
every (query, sample) is recorded exactly once: a query is committed whole (all its samples) or
not at all, a line torn by a crash is dropped, and a duplicate id is refused.  A rerun with
different arguments is refused with the first differing argument named, and ``--restart`` starts
over.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sim.foundation.errors import UserError
from sim.foundation.files import write_text_atomic

STATE = "state.json"
QUERIES = "queries.jsonl"


def _canonical(obj) -> object:
    """What ``obj`` reads back as from JSON, so a fresh fingerprint compares equal to a stored one."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _first_difference(old: dict, new: dict) -> str | None:
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} in the checkpoint, {new.get(key)!r} now"
    return None


class Checkpoint:
    """Committed queries of one collection, and the arguments they were made with."""

    def __init__(self, folder: Path, fingerprint: dict) -> None:
        self.folder = Path(folder)
        self.fingerprint = _canonical(fingerprint)
        self.records: dict[str, dict] = {}
        self.state: dict = {"fingerprint": self.fingerprint, "sessions": []}
        state_path = self.folder / STATE
        if state_path.is_file():
            try:
                stored = json.loads(state_path.read_text(encoding="utf-8"))
                old = stored["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(
                    "checkpoint is unreadable; pass --restart to start over", where=str(state_path)
                ) from None
            diff = _first_difference(old, self.fingerprint)
            nothing_done = not stored.get("sessions") and not (self.folder / QUERIES).exists()
            if diff and nothing_done:
                diff = None  # a start that stopped before generating anything: nothing to keep
                stored = {"fingerprint": self.fingerprint, "sessions": []}
                self.state = stored
                self._write_state()
            if diff:
                raise UserError(
                    f"this collection was started with other arguments ({diff}); rerun with the "
                    "same arguments to resume it, or pass --restart to start over",
                    where=str(self.folder),
                )
            self.state = stored
            self._load_queries()
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._write_state()

    def _load_queries(self) -> None:
        path = self.folder / QUERIES
        if not path.is_file():
            return
        good_bytes = 0
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    rec = json.loads(raw)
                    qid = rec["query_id"]
                except (ValueError, KeyError, TypeError):
                    if not raw.endswith(b"\n"):
                        break  # the last line, torn by a crash: drop it
                    raise UserError(
                        "corrupt checkpoint line; pass --restart to start over",
                        where=f"{path}:{lineno}",
                    ) from None
                if not raw.endswith(b"\n"):
                    break  # complete JSON but no newline: the write may not have finished
                if qid in self.records:
                    raise UserError(
                        f"query {qid!r} committed twice; the checkpoint is corrupt, pass "
                        "--restart to start over",
                        where=f"{path}:{lineno}",
                    )
                self.records[qid] = rec
                good_bytes += len(raw)
        if good_bytes != path.stat().st_size:
            with path.open("r+b") as fh:
                fh.truncate(good_bytes)

    def commit(self, records: list[dict]) -> None:
        """Append whole queries durably (one line each, flushed and fsync'ed)."""
        for rec in records:
            if rec["query_id"] in self.records:
                raise RuntimeError(f"query {rec['query_id']!r} generated twice")
        with (self.folder / QUERIES).open("a", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        for rec in records:
            self.records[rec["query_id"]] = rec

    def begin_session(self, info: dict) -> int:
        self.state["sessions"].append(dict(info))
        self._write_state()
        return len(self.state["sessions"]) - 1

    def update_session(self, index: int, **info) -> None:
        self.state["sessions"][index].update(info)
        self._write_state()

    @property
    def sessions(self) -> list[dict]:
        return list(self.state["sessions"])

    def _write_state(self) -> None:
        write_text_atomic(self.folder / STATE,
                          json.dumps(self.state, indent=2, sort_keys=True) + "\n", fsync=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
