"""Where trace sets live and how they are found by name.

Two places: the sets embedded in the package (``traces/data/*.parquet``, read-only) and the
user's own imports under ``$CLEARSIM_HOME/traces`` (default ``~/.clearsim/traces``), never
inside the installed package.  A user set with the same name as an embedded one shadows it.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path

from sim.foundation.errors import UserError
from traces.schema import TraceSet


def embedded_dir() -> Path:
    return Path(str(resources.files("traces.data")))


def user_dir() -> Path:
    home = os.environ.get("CLEARSIM_HOME")
    base = Path(home) if home else Path.home() / ".clearsim"
    return base / "traces"


def list_trace_sets() -> dict[str, Path]:
    """Every known trace set name and its file, user imports shadowing embedded sets."""
    found: dict[str, Path] = {}
    for folder in (embedded_dir(), user_dir()):
        if folder.is_dir():
            for f in sorted(folder.glob("*.parquet")):
                found[f.stem] = f
    return dict(sorted(found.items()))


def resolve_trace_path(name_or_path: str, *, where: str | None = None, field: str | None = None) -> Path:
    """A set name (embedded or imported) or a path to a ``.parquet`` trace file."""
    known = list_trace_sets()
    if name_or_path in known:
        return known[name_or_path]
    p = Path(name_or_path)
    if p.suffix == ".parquet":
        if not p.is_file():
            raise UserError(f"trace file {name_or_path} not found", where=where, field=field)
        return p
    close = difflib.get_close_matches(name_or_path, list(known), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(
        f"unknown trace set '{name_or_path}'; {hint}run 'clearsim traces list' for the names, "
        "or give a path to a .parquet trace file",
        where=where,
        field=field,
    )


_loaded: dict[Path, tuple[float, TraceSet]] = {}


def load_trace_set(name_or_path: str, **ctx) -> TraceSet:
    """Load a set by name or path (cached per file and modification time)."""
    path = resolve_trace_path(name_or_path, **ctx)
    mtime = path.stat().st_mtime
    hit = _loaded.get(path)
    if hit is None or hit[0] != mtime:
        _loaded[path] = (mtime, TraceSet.read(path))
    return _loaded[path][1]
