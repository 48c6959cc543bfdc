"""Deprecated alias: ``sim.cli_args`` moved to :mod:`sim.foundation.cli_args` (docs/architecture.md).

This path keeps working for one release: it *is* the new module (same object, so patches,
isinstance checks and old pickles resolve), with one DeprecationWarning on first import.
"""
# clearsim-deprecated-alias: written by relayout.py; delete in the release after next

import importlib as _importlib
import sys as _sys

if __name__ == "__main__":              # python -m sim.cli_args
    import runpy as _runpy

    _runpy.run_module("sim.foundation.cli_args", run_name="__main__", alter_sys=True)
else:
    import warnings as _warnings

    _warnings.warn("old import path sim.cli_args: import sim.foundation.cli_args instead "
                   "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
    _sys.modules[__name__] = _importlib.import_module("sim.foundation.cli_args")
