"""The trace collector: record per-query accuracy-vs-tokens traces from a real model.

``clearsim traces collect`` (:mod:`traces.collect.cli`) is a thin layer over :func:`collect`.
One module per job:

* :mod:`~traces.collect.problems`: the named problem sets and custom JSONL files;
* :mod:`~traces.collect.prompting`: the conversation and the per-query seeds;
* :mod:`~traces.grading`: answer extraction and comparison (math-verify, numeric, hooks);
  :mod:`~traces.collect.grading_report` documents its accuracy;
* :mod:`~traces.collect.vllm_backend` (vLLM on this GPU) and :mod:`~traces.collect.endpoint`
  (an OpenAI-compatible server), behind :mod:`~traces.collect.backend`;
* :mod:`~traces.collect.checkpoint`: resume after a crash, every (query, sample) exactly once;
* :mod:`~traces.collect.timing`: the calibration files (requests, time series, meta);
* :mod:`~traces.collect.collector`: the orchestration, :func:`collect`.

vLLM, math-verify and datasets come with the optional ``collect`` extra and are imported only
when used, so importing this package pulls none of them (nor torch).
"""

__all__ = ["collect", "CollectResult"]


def __getattr__(name: str):
    """Import the orchestrator on first use, so ``clearsim --help`` stays fast (PEP 562)."""
    if name in __all__:
        from traces.collect import collector  # noqa: PLC0415

        return getattr(collector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
