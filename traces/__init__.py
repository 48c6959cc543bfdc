"""Recorded accuracy-vs-tokens data: the trace format, importers, curve maths, predictors.

``traces/data/`` holds the embedded trace sets (numbers only, with provenance), built from the
public recordings by :mod:`traces.embed`.
"""

from traces.schema import TraceSet
from traces.registry import load_trace_set, list_trace_sets

__all__ = ["TraceSet", "load_trace_set", "list_trace_sets"]
