"""GPU replicas doing continuous batching, simulated with SimPy in closed form.

Each replica is one long-lived SimPy process that behaves like vLLM's scheduler loop:

* Requests reach the scheduler ``request_overhead_s`` after they are dispatched (CPU-side
  processing) and wait in FIFO order.
* At each step boundary, waiting requests join the running batch while there are free slots
  (``max_num_seqs``) and their prompts fit the step's token budget (``max_num_batched_tokens``;
  a prompt longer than it is admitted alone).  A joining request is prefilled in that step, which
  also produces its first output token; every other running request decodes one token.
* Step time = ``c0 + c1 * prefill tokens + c2 * decoding sequences`` (:class:`LinearStepModel`).
* A request leaves the batch when it has generated its tokens.

No SimPy event per token or per step: while nothing joins or leaves, every step costs the same,
so the loop jumps straight to the next completion (``k`` steps of equal length) and is woken
early only when a request arrives while a slot is free; it then finishes the step in progress
and admits the newcomer at the next boundary, exactly when a step-by-step loop would.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import simpy


@dataclass(frozen=True)
class LinearStepModel:
    """step_s = c0_s + c1_s * prefill_tokens + c2_s * decode_seqs."""

    c0_s: float
    c1_s: float
    c2_s: float

    def step_s(self, prefill_tokens: int, decode_seqs: int) -> float:
        return self.c0_s + self.c1_s * prefill_tokens + self.c2_s * decode_seqs


@dataclass(frozen=True)
class EngineConfig:
    step: LinearStepModel
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    request_overhead_s: float = 0.0
    replicas: int = 1
    routing: str = "round-robin"


class Recorder:
    """Per-request timestamps, filled in by the replicas (NaN until they happen).

    ``listeners`` are called with the indices of requests as they finish (and the time), so
    feedback-driven policies can learn from completions as a server would.
    """

    def __init__(self, n: int):
        self.scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.replica = np.full(n, -1, dtype=np.int64)
        self.listeners: list = []

    def mark_finished(self, idx: np.ndarray, now: float) -> None:
        if len(idx) == 0:
            return
        self.finish_s[idx] = now
        for listener in self.listeners:
            listener(idx, now)


class Replica:
    """One GPU engine: a SimPy process looping over (stretches of) scheduler steps."""

    def __init__(self, env: simpy.Environment, cfg: EngineConfig, prompt_tokens: np.ndarray,
                 gen_tokens: np.ndarray, rec: Recorder, rid: int = 0):
        self.env = env
        self.cfg = cfg
        self.prompt = prompt_tokens
        self.gen = gen_tokens
        self.rec = rec
        self.rid = rid
        self.waiting: deque[int] = deque()
        self.run_idx = np.empty(0, dtype=np.int64)
        self.run_rem = np.empty(0, dtype=np.int64)
        self.outstanding_tokens = 0  # generation tokens not yet produced, for routing
        self.busy_s = 0.0
        self.steps = 0
        self._wake: simpy.Event | None = None
        self.process = env.process(self._loop())

    # -------------------------------------------------------------- intake
    def dispatch(self, idx: np.ndarray) -> None:
        """Hand requests to this replica; they reach its scheduler after the CPU overhead."""
        self.rec.replica[idx] = self.rid
        self.outstanding_tokens += int(self.gen[idx].sum())
        if self.cfg.request_overhead_s > 0:
            ev = self.env.timeout(self.cfg.request_overhead_s)
            ev.callbacks.append(lambda _ev, idx=idx: self._enqueue(idx))
        else:
            self._enqueue(idx)

    def _enqueue(self, idx: np.ndarray) -> None:
        self.waiting.extend(idx.tolist())
        wake = self._wake
        if wake is not None and not wake.triggered and len(self.run_idx) < self.cfg.max_num_seqs:
            wake.succeed()

    # ---------------------------------------------------------------- loop
    def _admit(self) -> tuple[np.ndarray, int]:
        free = self.cfg.max_num_seqs - len(self.run_idx)
        limit = self.cfg.max_num_batched_tokens
        take: list[int] = []
        tokens = 0
        while self.waiting and len(take) < free:
            p = int(self.prompt[self.waiting[0]])
            if take and tokens + p > limit:
                break
            take.append(self.waiting.popleft())
            tokens += p
        return np.array(take, dtype=np.int64), tokens

    def _advance(self, steps: int) -> None:
        """``steps`` decode tokens for every running request; retire the finished."""
        self.run_rem -= steps
        self.outstanding_tokens -= steps * len(self.run_idx)
        done = self.run_rem <= 0
        if done.any():
            self.rec.mark_finished(self.run_idx[done], self.env.now)
            keep = ~done
            self.run_idx = self.run_idx[keep]
            self.run_rem = self.run_rem[keep]

    def _loop(self):
        env, cfg, step = self.env, self.cfg, self.cfg.step
        while True:
            if self.waiting and len(self.run_idx) < cfg.max_num_seqs:
                new, prefill = self._admit()
                self.rec.scheduled_s[new] = env.now
                dt = step.step_s(prefill, len(self.run_idx))
                yield env.timeout(dt)
                self.busy_s += dt
                self.steps += 1
                self._advance(1)  # the decoders' token of this step
                self.rec.first_token_s[new] = env.now
                self.outstanding_tokens -= len(new)
                rem = self.gen[new] - 1
                finished = rem <= 0
                self.rec.mark_finished(new[finished], env.now)
                self.run_idx = np.concatenate([self.run_idx, new[~finished]])
                self.run_rem = np.concatenate([self.run_rem, rem[~finished]])
                continue
            if len(self.run_idx) == 0:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            # A stretch of identical decode steps up to the next completion.
            s = step.step_s(0, len(self.run_idx))
            k = int(self.run_rem.min())
            start = env.now
            wake = self._wake = env.event()
            yield env.timeout(k * s) | wake
            self._wake = None
            if wake.triggered:
                # Someone can join: finish the step in progress, then admit at the boundary.
                j = min(k, max(1, math.ceil((env.now - start) / s - 1e-9)))
                end = start + j * s
                if end > env.now:
                    yield env.timeout(end - env.now)
            else:
                j = k
            self.busy_s += j * s
            self.steps += j
            self._advance(j)


class Router:
    """Chooses a replica for each dispatched request: ``round-robin`` or ``least-loaded``
    (fewest outstanding generation tokens, ties to the lowest index)."""

    def __init__(self, replicas: list[Replica], policy: str):
        self.replicas = replicas
        self.policy = policy
        self._next = 0

    def dispatch(self, idx: np.ndarray) -> None:
        if len(self.replicas) == 1:
            self.replicas[0].dispatch(idx)
            return
        for i in idx:
            if self.policy == "least-loaded":
                r = min(self.replicas, key=lambda rep: rep.outstanding_tokens)
            else:
                r = self.replicas[self._next]
                self._next = (self._next + 1) % len(self.replicas)
            r.dispatch(np.array([i], dtype=np.int64))
