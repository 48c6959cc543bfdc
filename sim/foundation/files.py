"""Atomic file writes: a reader (or a resumed sweep, or a crashed collection) never sees a
half-written file.  Every output clearsim writes goes through :func:`write_atomic` (or, for a
folder, :func:`write_dir_atomic`), and
:func:`terminate_raises` lets a SIGTERM run the cleanup of a folder being written."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None], *,
                 fsync: bool = False) -> Path:
    """Write ``path`` via ``write(tmp)`` to a temporary file beside it, then rename it over.

    The temporary file is ``.<name>.<random>.tmp`` in the same folder (so the rename is atomic)
    and is removed if ``write`` fails; ``fsync`` also flushes it to disk before the rename
    (crash-safe checkpoints).  The result is an ordinary 0644 file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), fsync=fsync)


def write_dir_atomic(path: str | os.PathLike, write: Callable[[Path], None], *,
                     replace: bool = False, suffix: str = ".tmp") -> Path:
    """Build the folder ``path`` via ``write(tmp)`` in a hidden ``.<name>.<random><suffix>``
    folder beside it, then rename it into place: a reader never sees a half-built folder, and
    a failure (or a SIGTERM under :func:`terminate_raises`) leaves nothing.

    An existing ``path`` is replaced whole with ``replace``; otherwise it must be an empty
    folder (callers check that up front), removed just before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))
    try:
        write(tmp)
        if path.exists():
            if replace:
                shutil.rmtree(path)
            else:
                path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


@contextmanager
def terminate_raises():
    """Within the block, SIGTERM raises ``SystemExit(143)`` instead of ending the process at
    once, so the ``except``/``finally`` cleanup of a half-written folder runs.  Only in the main
    thread, and only when nobody installed their own SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
