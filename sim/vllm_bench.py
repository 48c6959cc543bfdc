"""Deprecated alias: ``sim.vllm_bench`` moved to :mod:`sim.experiments.vllm_bench` (docs/architecture.md).

This path keeps working for one release: it *is* the new module (same object, so patches,
isinstance checks and old pickles resolve), with one DeprecationWarning on first import.
"""
# clearsim-deprecated-alias: written by relayout.py; delete in the release after next

from sim.foundation.aliases import alias

alias(__name__, "sim.experiments.vllm_bench")
