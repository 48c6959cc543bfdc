"""Output folders, checked before any work: a run or sweep that cannot write its folder is
refused up front (not after minutes of simulation), and a scenario's ``name`` never steers the
default folder outside ``runs/`` / ``sweeps/``.

Run folders are published by renaming a hidden ``.<name>.<random>.partial`` folder.  While it
is written, SIGTERM (``kill``, a batch scheduler's time limit) removes it before the process
ends (:func:`sim.foundation.files.terminate_raises`); SIGKILL cannot be caught and leaves it behind, and the next
write into the same parent removes those older than :data:`STALE_S`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from sim.foundation.errors import UserError

MAX_NAME = 100  # characters of a scenario/sweep name kept in a default folder name
STALE_S = 3600.0  # a .partial folder this old belongs to a killed run
PARTIAL = ".partial"


def safe_name(name: str, fallback: str = "run") -> str:
    """``name`` as one harmless path component: only letters, digits, ``.``, ``_``, ``-``
    (anything else becomes ``-``), no leading dot, at most :data:`MAX_NAME` characters.
    ``../../escaped`` becomes ``escaped``; ``/etc`` becomes ``etc``."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name))
    s = re.sub(r"\.{2,}", "-", s).strip(".-")[:MAX_NAME].strip(".-")
    return s or fallback


def check_out_dir(out: str | os.PathLike, *, allow_existing: bool = False) -> Path:
    """Refuse ``out`` now if the folder could not be written later: it exists and is not an
    empty folder (unless ``allow_existing``), lies under a file, has a component too long for
    the file system, or its nearest existing parent refuses a new folder (read-only, /proc)."""
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > 255:
            raise UserError(f"a path component is {len(part)} characters long; the limit is 255",
                            where=str(out)[:120] + "...")
    if out.exists():
        if not out.is_dir():
            raise UserError("exists and is not a folder; choose another --out", where=str(out))
        if not allow_existing and any(out.iterdir()):
            raise UserError("output folder exists and is not empty; choose another --out or "
                            "remove it", where=str(out))
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot create a folder here: '{parent}' is a file; choose another --out",
                        where=str(out))
    try:
        probe = tempfile.mkdtemp(prefix=".clearsim-probe.", dir=parent)
        os.rmdir(probe)
    except OSError as exc:
        raise UserError(f"cannot write into '{parent}' ({exc.strerror or exc.__class__.__name__});"
                        " choose another --out", where=str(out)) from None
    return out


def clean_stale(parent: Path, *, older_than_s: float = STALE_S) -> list[Path]:
    """Remove ``.*.partial`` folders in ``parent`` not touched for ``older_than_s``."""
    removed = []
    now = time.time()
    try:
        entries = list(parent.glob(f".*{PARTIAL}"))
    except OSError:
        return removed
    for p in entries:
        try:
            if p.is_dir() and now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        except OSError:
            pass
    return removed
