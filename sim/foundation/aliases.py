"""Deprecated import paths: what every module left at an old path (by the issue-14 relayout)
does, in one place, so all of them behave the same.

An alias *is* the new module (``sys.modules`` points the old name at it: patches through the
old path, ``isinstance`` checks and old pickles resolve), with one DeprecationWarning on first
import, attributed to the importing line; ``python -m old.path`` runs the new module.
"""

from __future__ import annotations

import importlib
import runpy
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Called at the top of the module at the old path as ``alias(__name__, "new.path")``."""
    if old == "__main__":  # python -m old.path
        runpy.run_module(new, run_name="__main__", alter_sys=True)
        return
    # stacklevel 3: past this function and the alias module, to the line that imported it
    # (the import machinery's own frames are skipped by the warnings module)
    warnings.warn(f"old import path {old}: import {new} instead (the old path goes in the next "
                  "release)", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)


__all__ = ["alias"]
