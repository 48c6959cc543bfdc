"""What a generation backend takes and returns (the vLLM library or an OpenAI-compatible server).

A backend turns :class:`GenRequest` s (one per problem, ``n`` samples each) into
:class:`GenResult` s: per sample the completion text (for grading only, never stored), its length
in tokens as the engine counted them, and why it stopped; per query the prompt length and the cap
actually applied; plus the per-request timings for the calibration files.  Grading, checkpoints
and files are the orchestrator's job (:mod:`traces.collect.collector`), so each backend does one
thing: talk to its engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

#: The finish reasons a usable sample can have (vLLM's ``CompletionOutput.finish_reason`` and the
#: OpenAI ``choices[].finish_reason``): ``stop`` (EOS or a stop string) or ``length`` (the cap).
FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class GenRequest:
    query_id: str
    messages: list[dict]
    n: int
    #: The requested cap; a backend lowers it to fit the model's context (see GenResult).
    max_tokens: int
    #: Sample k is drawn with seed + k (see traces.collect.prompting).
    seed: int
    temperature: float
    top_p: float


@dataclass(frozen=True)
class GenSample:
    index: int
    text: str
    tokens: int
    finish_reason: str


@dataclass(frozen=True)
class RequestTiming:
    """One engine request's timestamps, as in ``shared/data/serving/vllm_runs/*/requests.jsonl``.

    ``arrival_time`` is wall-clock; the ``*_ts`` fields are monotonic seconds (vLLM V1's
    ``RequestStateStats`` convention).  ``n`` is how many samples the request carried.
    """

    request_id: str
    input_toks: int
    output_toks: int
    arrival_time: float
    queued_ts: float
    scheduled_ts: float
    first_token_ts: float
    last_token_ts: float
    n: int = 1

    def row(self) -> dict:
        return {
            "request_id": self.request_id,
            "input_toks": self.input_toks,
            "output_toks": self.output_toks,
            "arrival_time": self.arrival_time,
            "queued_ts": self.queued_ts,
            "scheduled_ts": self.scheduled_ts,
            "first_token_ts": self.first_token_ts,
            "last_token_ts": self.last_token_ts,
            "n": self.n,
        }


@dataclass(frozen=True)
class GenResult:
    query_id: str
    prompt_tokens: int
    #: The cap applied: min(requested, context window - prompt tokens) when the window is known.
    max_tokens: int
    samples: list[GenSample]
    timings: list[RequestTiming] = field(default_factory=list)


class Backend(Protocol):
    kind: str

    def provenance(self) -> dict:
        """Model, revision, engine version and hardware, for the trace's metadata."""

    def serving_meta(self) -> dict:
        """Engine settings and hardware for the calibration run's ``meta.json``."""

    def metrics_snapshot(self) -> dict | None:
        """Engine gauges and counters now (see :func:`traces.collect.timing.snapshot_from`)."""

    def run(self, requests: list[GenRequest], chunk_size: int) -> Iterator[GenResult]:
        """Generate every request's samples, yielding each query once all of them are done."""

    def close(self) -> None:
        """Release the engine or connections."""
