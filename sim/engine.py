"""GPU replicas doing vLLM V1-style continuous batching, simulated with SimPy in closed form.

Each replica is one long-lived SimPy process that behaves like vLLM V1's scheduler loop
(``vllm/v1/core/sched/scheduler.py``, FCFS), step by step:

* A request reaches the scheduler ``request_overhead_s`` after it is dispatched (CPU-side
  processing) and waits in FIFO order.
* Every step has a token budget ``max_num_batched_tokens``.  The *running* requests are served
  first, in the order they were admitted: a decoding request takes one token; a request still
  prefilling takes the next chunk of its prompt (chunked prefill: ``min(tokens left, budget
  left)``).  Then, if no request was preempted in this step, waiting requests are admitted in
  FIFO order while the batch has fewer than ``max_num_seqs`` requests and budget is left, each
  with its first chunk.
* KV cache: a request holds ``ceil(computed tokens / block_size)`` blocks of ``block_size``
  (16) tokens; the cache has ``kv_blocks`` blocks (``None`` = unlimited).  Before a step every
  scheduled request allocates the blocks its new tokens need.  A waiting request is admitted only
  if its first chunk's blocks are free.  When a running request cannot get a block, the *last*
  running request (the most recently admitted) is preempted, possibly the request itself: its
  blocks are freed, it goes back to the *front* of the waiting queue, and when admitted again it
  recomputes its prompt *and* the tokens it had already generated (vLLM V1's recompute
  preemption) before producing its next token.  Tokens already streamed stay streamed.
* The step in which a request's last prompt chunk is computed also produces its first token;
  every decoding request produces one token per step.  A request leaves the batch, freeing its
  blocks, when it has generated its tokens.
* Step time comes from a step model (:mod:`sim.stepmodels`): ``linear`` (c0 + c1 prefill tokens
  + c2 decoding sequences + c3 their context) or an interpolated profile ``table``.

Speed: no SimPy event per token or per step.  While the batch is unchanged (no prefill in
progress, nobody admissible, no completion, no KV exhaustion) every step has the same structure,
so the replica jumps over the whole stretch in closed form (:meth:`LinearStepModel.decode_stretch`).
And because nothing but the environment's next non-replica event (an arrival, an allocation
decision, a CPU-overhead timer; replicas do not interact) can affect a replica, it computes all
steps that end before that event without yielding, and yields only for the one step in progress
when the event happens: requests that arrive during a step are admitted at the next step
boundary, exactly when a step-by-step loop would admit them.  Consequently :class:`Recorder`
listeners hear of every completion, with its right ``now``, before the next non-replica event,
but possibly before ``env.now`` reaches it and, across replicas, not in global time order.

With ``sample_s`` set, each replica records (running, waiting, KV blocks used) every
``sample_s`` seconds as it goes, as vLLM's periodic metrics logger does
(:func:`sample_timeseries`); samples inside a stretch are computed in closed form too.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass

import numpy as np
import simpy

from sim.errors import UserError
from sim.stepmodels import LinearStepModel, TableStepModel, solve_steps

INT = np.int64


@dataclass(frozen=True)
class EngineConfig:
    step: LinearStepModel | TableStepModel
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    request_overhead_s: float = 0.0
    replicas: int = 1
    routing: str = "round-robin"
    #: KV cache capacity in blocks per replica; None = unlimited.
    kv_blocks: int | None = None
    block_size: int = 16
    #: Sample running / waiting / KV use every ``sample_s`` seconds (None: no time series).
    sample_s: float | None = None

    def __post_init__(self):
        if self.max_num_batched_tokens < self.max_num_seqs:
            # vLLM refuses this too: every running request must be able to decode each step.
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs")
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise ValueError("kv_blocks must be >= 1 (or None for unlimited)")


class Recorder:
    """Per-request timestamps, filled in by the replicas (NaN until they happen).

    ``scheduled_s`` is when a request first joined the running batch, ``first_token_s`` its
    first token, ``finish_s`` its last; ``preemptions`` counts how often it was preempted.
    ``listeners`` are called with the indices of requests as they finish (and the time), so
    feedback-driven policies can learn from completions as a server would.
    """

    def __init__(self, n: int):
        self.scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.replica = np.full(n, -1, dtype=INT)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.listeners: list = []

    def mark_finished(self, idx: np.ndarray, now: float) -> None:
        if len(idx) == 0:
            return
        self.finish_s[idx] = now
        for listener in self.listeners:
            listener(idx, now)


_EMPTY = np.empty(0, dtype=INT)


class _StepTimeout(simpy.Timeout):
    """A replica's own timeout (a step's end): never a reason for another replica to stop."""


class _Wake(simpy.Event):
    """A replica's wake-up from idle."""


_OWN = (_StepTimeout, _Wake)


def _horizon(env: simpy.Environment) -> float:
    """Time of the next event that is not a replica's own: only those (arrivals, allocation
    decisions, CPU-overhead timers) can change what a replica does.  Replicas do not interact,
    so each may compute ahead up to this time regardless of the others' steps."""
    queue = getattr(env, "_queue", None)
    if queue is None:  # not SimPy's usual Environment: be conservative
        return env.peek()
    best = float("inf")
    for item in queue:
        if item[0] < best and not isinstance(item[3], _OWN):
            best = item[0]
    return best


class Replica:
    """One GPU engine: a SimPy process looping over scheduler steps and closed-form stretches.

    Decoding requests are kept in admission order as numpy arrays relative to a step counter
    ``off`` that every decode step advances: a decoder's context is ``d_base + off`` and its
    tokens left ``d_end - off``, so a stretch of ``j`` steps is ``off += j``, O(1).  KV blocks
    held by decoders are computed on demand (``ceil(context / block_size)``), and only when a
    cheap upper bound says the cache could be short.
    """

    def __init__(self, env: simpy.Environment, cfg: EngineConfig, prompt_tokens: np.ndarray,
                 gen_tokens: np.ndarray, rec: Recorder, rid: int = 0, external=None):
        self.env = env
        #: Time of the next event outside the replicas that could hand this replica work (an
        #: allocation decision).  The runner knows its decision schedule and passes it; other
        #: callers get the conservative scan of SimPy's event queue (:func:`_horizon`).
        self._external = external if external is not None else (lambda: _horizon(env))
        # Requests dispatched but not yet at the scheduler (CPU overhead), in time order: their
        # arrival times at the scheduler and indices, consumed from ``_fp`` on.  No SimPy event
        # per request: the replica takes them in as its clock passes their times.
        self._feed_t: list[float] = []
        self._feed_i: list[int] = []
        self._fp = 0
        self.cfg = cfg
        self.prompt = prompt_tokens
        self.gen = gen_tokens
        self.rec = rec
        self.rid = rid
        self.waiting: deque[int] = deque()
        # Decoding requests, in admission order: index, context - off, tokens left + off.
        self.d_idx = _EMPTY
        self.d_base = _EMPTY
        self.d_end = _EMPTY
        self._dmin = 1 << 62  # d_end.min(): no decoder can finish before off reaches it
        self.off = 0
        self.base_sum = 0
        # Requests part-way through (re)prefill, after the decoders in admission order:
        # [index, computed tokens, tokens to compute before the next output, tokens emitted].
        self.pre: list[list[int]] = []
        self.kv_pre = 0  # blocks held by the prefilling requests
        self._emitted: dict[int, int] = {}  # preempted requests: tokens already streamed
        self._outstanding = 0  # generation tokens not yet produced (as of the last applied step)
        self._fly: tuple[float, float, float, int] | None = None  # stretch in flight: t0, a, b, n
        self.busy_s = 0.0
        self.steps = 0
        self.preemptions = 0
        self._wake: simpy.Event | None = None
        self._in_step = False  # a step is in progress (its blocks are allocated)
        self._limit = cfg.kv_blocks if cfg.kv_blocks is not None else 1 << 62
        # Time series sampled every cfg.sample_s: time, running, waiting, KV blocks used.
        self._next_sample = cfg.sample_s if cfg.sample_s else float("inf")
        self.ts_t = array("d")
        self.ts_running = array("q")
        self.ts_waiting = array("q")
        self.ts_kv = array("q")
        self.process = env.process(self._loop())

    # -------------------------------------------------------------- state
    @property
    def running(self) -> int:
        return len(self.d_idx) + len(self.pre)

    @property
    def outstanding_tokens(self) -> int:
        """Generation tokens not yet produced at ``env.now``, for least-loaded routing (during a
        stretch in flight, minus the steps completed so far)."""
        if self._fly is None:
            return self._outstanding
        t0, a, b, n = self._fly
        return self._outstanding - n * solve_steps(a, b, self.env.now - t0)

    def _dec_blocks(self, ahead: int = 0) -> int:
        """Blocks the decoders hold once ``ahead`` more tokens each are allocated."""
        if len(self.d_idx) == 0:
            return 0
        bs = self.cfg.block_size
        return int((-(-(self.d_base + (self.off + ahead)) // bs)).sum())

    @property
    def kv_used(self) -> int:
        return self._dec_blocks(1 if self._in_step else 0) + self.kv_pre

    def _ctx_sum(self) -> int:
        return self.base_sum + len(self.d_idx) * self.off

    def _kv_loose(self, steps: int, extra: int = 0) -> bool:
        """Whether the cache certainly holds the decoders ``steps`` tokens on, plus ``extra``
        blocks (sum ceil(x / bs) <= (sum x + n (bs - 1)) / bs)."""
        if self.cfg.kv_blocks is None:
            return True
        n, bs = len(self.d_idx), self.cfg.block_size
        bound = (self._ctx_sum() + n * (steps + bs - 1)) // bs
        return bound + self.kv_pre + extra <= self._limit

    # -------------------------------------------------------------- intake
    def dispatch(self, idx: np.ndarray, at_s: np.ndarray | None = None) -> None:
        """Hand requests to this replica now (or, for a schedule known ahead, at times
        ``at_s``, non-decreasing); they reach its scheduler after the CPU overhead."""
        if self.cfg.kv_blocks is not None and len(idx):
            bs = self.cfg.block_size
            need = -(-(self.prompt[idx] + self.gen[idx] - 1) // bs)
            if need.max() > self.cfg.kv_blocks:
                raise UserError(f"a request needs {int(need.max())} KV blocks of "
                                f"{self.cfg.block_size} tokens, more than the cache's "
                                f"{self.cfg.kv_blocks}: it could never run; raise kv_blocks or "
                                "shorten the budget", field="engine.kv_blocks")
        self.rec.replica[idx] = self.rid
        self._outstanding += int(self.gen[idx].sum())
        if at_s is None:
            at_s = np.full(len(idx), self.env.now)
        self.feed(at_s + self.cfg.request_overhead_s, idx)

    def feed(self, at_s: np.ndarray, idx: np.ndarray) -> None:
        """Requests ``idx`` reach the scheduler at times ``at_s`` (non-decreasing, not before
        any already fed, not before ``env.now``).  :meth:`dispatch` feeds one decision's
        requests; the runner feeds a whole precomputed schedule at once."""
        self._feed_t.extend(at_s.tolist())
        self._feed_i.extend(idx.tolist())
        wake = self._wake
        if wake is not None and not wake.triggered:
            wake.succeed()

    def _next_fed(self) -> float:
        return self._feed_t[self._fp] if self._fp < len(self._feed_t) else float("inf")

    def _take_fed(self, t: float) -> None:
        """Move every fed request whose time has come (<= t) into the waiting queue."""
        ft, p, m = self._feed_t, self._fp, len(self._feed_t)
        if p < m and ft[p] <= t:
            q = p + 1
            while q < m and ft[q] <= t:
                q += 1
            self.waiting.extend(self._feed_i[p:q])
            self._fp = q
            if q > 65536 and q * 2 > m:  # drop the consumed prefix now and then: O(1) amortised
                del self._feed_t[:q], self._feed_i[:q]
                self._fp = 0

    def _sample_until(self, t_end: float, t0: float = 0.0, a: float = 0.0, b: float = 0.0) -> None:
        """Record the state in force at every sample time before ``t_end``.  Within a stretch
        that started at ``t0`` with steps ``a + b s``, the context has grown by the steps
        completed by then."""
        running, waiting = self.running, len(self.waiting)
        limited = self.cfg.kv_blocks is not None
        ft, p = self._feed_t, self._fp
        while self._next_sample < t_end:
            g = self._next_sample
            while p < len(ft) and ft[p] <= g:  # fed since, not yet taken in: waiting at g
                p += 1
                waiting += 1
            if a > 0.0:
                kv = self._dec_blocks(solve_steps(a, b, g - t0) + 1) if limited else 0
            else:
                kv = self.kv_used if limited else 0
            self.ts_t.append(g)
            self.ts_running.append(running)
            self.ts_waiting.append(waiting)
            self.ts_kv.append(kv)
            self._next_sample = g + self.cfg.sample_s

    # ---------------------------------------------------------------- loop
    def _loop(self):
        env = self.env
        t = env.now
        zero_yielded = False
        sampling = self.cfg.sample_s is not None
        external = self._external
        while True:
            if self._fp < len(self._feed_t) and self._feed_t[self._fp] <= t:
                self._take_fed(t)
            if not self.waiting and not self.pre and len(self.d_idx) == 0:
                if sampling and self._next_sample <= t:
                    self._sample_until(t + 1e-12)
                nxt = self._next_fed()
                if nxt < float("inf"):
                    yield _StepTimeout(env, nxt - env.now)
                else:
                    self._wake = _Wake(env)
                    yield self._wake
                    self._wake = None
                t = env.now
                if sampling and self._next_sample < t:
                    self._sample_until(t)
                zero_yielded = False
                continue
            horizon = external()
            nxt = self._next_fed()
            if nxt < horizon:
                horizon = nxt
            if horizon <= t and not zero_yielded:
                # Same-time events pending (e.g. an arrival now): let them in before scheduling.
                zero_yielded = True
                yield _StepTimeout(env, max(0.0, t - env.now))
                continue
            zero_yielded = False
            stretch = self._plan_stretch()
            if stretch is not None:
                j, a, b = stretch
                if len(self.d_idx) >= self.cfg.max_num_seqs or self.waiting:
                    # Nobody can join before the next completion whatever arrives (batch full,
                    # or the queue's head does not fit and FCFS keeps the rest behind it): run
                    # the whole stretch in one event.
                    dt = j * a + b * j * (j - 1) * 0.5
                    self._fly = (t, a, b, len(self.d_idx))
                    self._in_step = True
                    yield _StepTimeout(env, t + dt - env.now)
                    self._in_step = False
                    self._fly = None
                    if sampling and self._next_sample < t + dt:
                        self._sample_until(t + dt, t, a, b)
                    t += dt
                    self._apply_stretch(j, k_done=stretch[0], dt=dt, t=t)
                    continue
                jh = solve_steps(a, b, horizon - t)
                if jh >= 1:
                    j = min(j, jh)
                    dt = j * a + b * j * (j - 1) * 0.5
                    if sampling and self._next_sample < t + dt:
                        self._sample_until(t + dt, t, a, b)
                    t += dt
                    self._apply_stretch(j, k_done=stretch[0], dt=dt, t=t)
                    continue
                # The next step is in progress when the next event happens: wait for its end.
                t_end = t + a
                self._in_step = True
                yield _StepTimeout(env, t_end - env.now)
                self._in_step = False
                if sampling and self._next_sample < t_end:
                    self._sample_until(t_end, t, a, b)
                t = t_end
                self._apply_stretch(1, k_done=stretch[0], dt=a, t=t)
                continue
            plan = self._plan_step(t)
            t_end = t + plan[0]
            self._in_step = True
            if t_end > horizon:
                yield _StepTimeout(env, t_end - env.now)
            if sampling and self._next_sample < t_end:
                self._sample_until(t_end)
            self._in_step = False
            t = t_end
            self._apply_step(plan, t)

    # ---------------------------------------------------- uniform stretches
    def _first_chunk_blocks(self, budget: int) -> int:
        i = self.waiting[0]
        first = min(int(self.prompt[i]) + self._emitted.get(i, 0), budget)
        return -(-first // self.cfg.block_size)

    def _plan_stretch(self):
        """(steps, a, b) for a run of identical decode-only steps from now, or None."""
        n = len(self.d_idx)
        if self.pre or n == 0:
            return None
        k = self._dmin - self.off
        budget = self.cfg.max_num_batched_tokens - n
        admit = bool(self.waiting) and n < self.cfg.max_num_seqs and budget > 0
        if self.cfg.kv_blocks is None:
            if admit:
                return None
        else:
            bs = self.cfg.block_size
            first = self._first_chunk_blocks(budget) if admit else 0
            if admit and self._kv_loose(1, first):
                return None  # admissible now: a general step
            if not self._kv_loose(k) or admit:
                ctx = self.d_base + self.off
                held = int((-(-ctx // bs)).sum())
                new_now = int(np.count_nonzero(ctx % bs == 0))
                free = self._limit - held
                if new_now > free:
                    return None  # preemption at this step
                if admit and first <= free - new_now:
                    return None
                # Blocks taken over j steps: sum ceil((c + j)/bs) - held; stop before the
                # first step that would not get its block (it preempts: a general step).
                if not self._kv_loose(k):
                    def demand(j: int) -> int:
                        return int((-(-(ctx + j) // bs)).sum()) - held

                    if demand(k) > free:
                        lo, hi = 1, k  # demand(lo) <= free (new_now <= free), demand(hi) > free
                        while hi - lo > 1:
                            mid = (lo + hi) // 2
                            if demand(mid) <= free:
                                lo = mid
                            else:
                                hi = mid
                        k = lo
        a, b = self.cfg.step.decode_stretch(n, self._ctx_sum() + n)
        return k, a, b

    def _apply_stretch(self, j: int, k_done: int, dt: float, t: float) -> None:
        self.busy_s += dt
        self.steps += j
        self.off += j
        self._outstanding -= j * len(self.d_idx)
        if j >= k_done and self.off >= self._dmin:
            self._retire(self.d_end <= self.off, t)

    def _retire(self, done: np.ndarray, t: float) -> None:
        if not done.any():
            return
        fin = self.d_idx[done]
        keep = ~done
        self.base_sum -= int(self.d_base[done].sum())
        self.d_idx = self.d_idx[keep]
        self.d_base = self.d_base[keep]
        self.d_end = self.d_end[keep]
        self._dmin = int(self.d_end.min()) if len(self.d_end) else 1 << 62
        self.rec.mark_finished(fin, t)

    # ------------------------------------------------------- general steps
    def _preempt(self, i: int, emitted: int) -> None:
        self._emitted[i] = emitted
        self.waiting.appendleft(i)
        self.rec.preemptions[i] += 1
        self.preemptions += 1

    def _plan_step(self, t: float):
        """Schedule one step at time ``t`` as vLLM V1 does; returns what :meth:`_apply_step` needs."""
        cfg = self.cfg
        bs = cfg.block_size
        budget = cfg.max_num_batched_tokens
        n = len(self.d_idx)
        # Exact KV bookkeeping only when the cache could run short this step.
        limited = cfg.kv_blocks is not None and not self._kv_loose(
            1, -(-budget // bs) + len(self.pre) + cfg.max_num_seqs)
        preempted = False
        free = 0
        if limited:
            ctx = self.d_base + self.off
            held = -(-ctx // bs)
            free = self._limit - int(held.sum()) - self.kv_pre
            newb = (ctx % bs == 0).astype(INT)
            need = int(newb.sum())
            if need > free:
                # Pop from the end: first every prefilling request, then decoders until the
                # remaining prefix gets its blocks (vLLM pops one at a time; same outcome).
                for i, c, _target, o in reversed(self.pre):
                    free += -(-c // bs)
                    self._preempt(i, o)
                self.pre = []
                self.kv_pre = 0
                preempted = True
                if need > free:
                    prefix = np.concatenate(([0], np.cumsum(newb)))
                    suffix = np.concatenate((np.cumsum(held[::-1])[::-1], [0]))
                    keep = int(np.searchsorted(prefix - suffix, free, side="right")) - 1
                    for pos in range(n - 1, keep - 1, -1):
                        i = int(self.d_idx[pos])
                        self._preempt(i, int(self.gen[i]) - (int(self.d_end[pos]) - self.off))
                    free += int(held[keep:].sum())
                    self.base_sum -= int(self.d_base[keep:].sum())
                    self.d_idx, self.d_base, self.d_end = (
                        self.d_idx[:keep], self.d_base[:keep], self.d_end[:keep])
                    self._dmin = int(self.d_end.min()) if keep else 1 << 62
                    n = keep
                    need = int(newb[:keep].sum())
            free -= need
        budget -= n
        chunks: list[tuple[list[int], int]] = []  # (entry, tokens computed this step)
        prefill = 0
        k = 0
        while k < len(self.pre) and budget > 0:
            entry = self.pre[k]
            num = min(entry[2] - entry[1], budget)
            extra = -(-(entry[1] + num) // bs) - (-(-entry[1] // bs))
            if limited:
                gone = False
                while extra > free:
                    victim = self.pre.pop()
                    held_v = -(-victim[1] // bs)
                    free += held_v
                    self.kv_pre -= held_v
                    self._preempt(victim[0], victim[3])
                    preempted = True
                    if victim is entry:
                        gone = True
                        break
                if gone:
                    break
                free -= extra
            self.kv_pre += extra
            chunks.append((entry, num))
            prefill += num
            budget -= num
            k += 1
        new: list[int] = []
        if not preempted:
            running = n + len(self.pre)
            while self.waiting and running < cfg.max_num_seqs and budget > 0:
                i = self.waiting[0]
                o = self._emitted.get(i, 0)
                target = int(self.prompt[i]) + o
                num = min(target, budget)
                blocks = -(-num // bs)
                if limited:
                    if blocks > free:
                        break
                    free -= blocks
                self.kv_pre += blocks
                self.waiting.popleft()
                if o:
                    del self._emitted[i]
                entry = [i, 0, target, o]
                self.pre.append(entry)
                chunks.append((entry, num))
                new.append(i)
                prefill += num
                budget -= num
                running += 1
        if new:
            sched = self.rec.scheduled_s
            if len(new) == 1:
                if sched[new[0]] != sched[new[0]]:  # NaN: first time scheduled
                    sched[new[0]] = t
            else:
                arr = np.array(new, dtype=INT)
                sched[arr[np.isnan(sched[arr])]] = t
        dctx = self._ctx_sum() + n if n else 0
        dt = cfg.step.step_s(prefill, n, dctx)
        return dt, chunks

    def _apply_step(self, plan, t: float) -> None:
        dt, chunks = plan
        self.busy_s += dt
        self.steps += 1
        n = len(self.d_idx)
        emitted = n
        if n:
            self.off += 1
            if self.off >= self._dmin:
                self._retire(self.d_end <= self.off, t)
        if chunks:
            bs = self.cfg.block_size
            first, fin, to_dec = [], [], []
            for entry, num in chunks:
                entry[1] += num
                if entry[1] < entry[2]:
                    continue
                i, c, _target, o = entry
                emitted += 1
                self.kv_pre -= -(-c // bs)
                if o == 0:
                    first.append(i)
                if o + 1 >= self.gen[i]:
                    fin.append(i)
                else:
                    to_dec.append((i, c, int(self.gen[i]) - o - 1))
            if first:
                self.rec.first_token_s[first] = t
            done_entries = len(fin) + len(to_dec)
            if done_entries:
                # Requests finish prefill in order, so they are the head of ``pre``.
                del self.pre[:done_entries]
            if to_dec:
                idx, ctx, rem = zip(*to_dec)
                base = np.array(ctx, dtype=INT) - self.off
                self._dmin = min(self._dmin, min(rem) + self.off)
                if len(self.d_idx):
                    self.d_idx = np.concatenate((self.d_idx, np.array(idx, dtype=INT)))
                    self.d_base = np.concatenate((self.d_base, base))
                    self.d_end = np.concatenate((self.d_end, np.array(rem, dtype=INT) + self.off))
                else:
                    self.d_idx = np.array(idx, dtype=INT)
                    self.d_base = base
                    self.d_end = np.array(rem, dtype=INT) + self.off
                self.base_sum += sum(ctx) - len(ctx) * self.off
            if fin:
                self.rec.mark_finished(np.array(fin, dtype=INT), t)
        self._outstanding -= emitted


class Router:
    """Chooses a replica for each dispatched request: ``round-robin`` or ``least-loaded``
    (fewest outstanding generation tokens, ties to the lowest index)."""

    def __init__(self, replicas: list[Replica], policy: str):
        self.replicas = replicas
        self.policy = policy
        self._next = 0

    @property
    def static(self) -> bool:
        """Whether the choice ignores the replicas' state (so it can be made ahead)."""
        return len(self.replicas) == 1 or self.policy != "least-loaded"

    def dispatch_ahead(self, idx: np.ndarray, at_s: np.ndarray) -> None:
        """Route a whole schedule known in advance (request ``idx[k]`` dispatched at
        ``at_s[k]``, in dispatch order) at once: the same replicas :meth:`dispatch` would
        choose call by call, for static routing."""
        if not self.static:
            raise ValueError("least-loaded routing depends on the replicas' state: dispatch live")
        r = len(self.replicas)
        if r == 1:
            self.replicas[0].dispatch(idx, at_s)
            return
        order = (self._next + np.arange(len(idx))) % r
        self._next = int((self._next + len(idx)) % r)
        for k, rep in enumerate(self.replicas):
            mine = order == k
            if mine.any():
                rep.dispatch(idx[mine], at_s[mine])

    def dispatch(self, idx: np.ndarray) -> None:
        if len(self.replicas) == 1:
            self.replicas[0].dispatch(idx)
            return
        if self.policy != "least-loaded":
            r = len(self.replicas)
            order = (self._next + np.arange(len(idx))) % r
            self._next = int((self._next + len(idx)) % r)
            for k, rep in enumerate(self.replicas):
                mine = idx[order == k]
                if len(mine):
                    rep.dispatch(mine)
            return
        for i in idx:
            r = min(self.replicas, key=lambda rep: rep.outstanding_tokens)
            r.dispatch(np.array([i], dtype=INT))


def sample_timeseries(replicas: list[Replica], interval_s: float | None = None) -> dict:
    """Running, waiting and KV blocks used per replica, sampled every ``cfg.sample_s`` seconds
    (the values in force at each sample time, as vLLM's periodic metrics logger reports them),
    from ``sample_s`` to the replica's last state change."""
    cols = {"t_s": [], "replica": [], "running": [], "waiting": [], "kv_blocks": []}
    for r in replicas:
        cols["t_s"].append(np.frombuffer(r.ts_t, dtype=np.float64) if len(r.ts_t) else np.zeros(0))
        cols["replica"].append(np.full(len(r.ts_t), r.rid, dtype=np.int64))
        for name, arr_ in (("running", r.ts_running), ("waiting", r.ts_waiting), ("kv_blocks", r.ts_kv)):
            cols[name].append(np.frombuffer(arr_, dtype=np.int64).copy() if len(arr_) else np.zeros(0, dtype=np.int64))
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
