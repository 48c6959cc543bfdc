"""GPU replicas doing vLLM V1-style continuous batching, simulated with SimPy in closed form.

Each replica is one scheduler loop that behaves like vLLM V1's (``vllm/v1/core/sched/scheduler.py``,
FCFS), step by step; it runs as a long-lived SimPy process, or, when every request is known
before the run (decisions made ahead), without SimPy at all (:meth:`Replica.run_ahead`):

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
* Step time comes from a step model (:mod:`sim.core.stepmodels`): ``linear`` (c0 + c1 prefill tokens
  + c2 decoding sequences + c3 their context) or an interpolated profile ``table``.

Speed: no SimPy event per token or per step.  While the batch is unchanged (no prefill in
progress, nobody admissible, no completion, no KV exhaustion) every step has the same structure,
so the replica jumps over the whole stretch in closed form (:meth:`LinearStepModel.decode_stretch`).
And because nothing but the environment's next non-replica event (an arrival, an allocation
decision, a CPU-overhead timer; replicas do not interact) can affect a replica, it computes all
steps that end before that event without yielding, and yields once, to the end of the step in
progress when the event happens (a stretch cut there is one wait): requests that arrive during a
step are admitted at the next step boundary, exactly when a step-by-step loop would admit them.
The commonest general step, admitting requests whose whole prompt fits in it, is planned and
applied in one call when it ends before that event (:meth:`Replica._admit_whole`).  A replica
may thus finish requests before ``env.now`` reaches their time; feedback policies hear of them
at their decisions, in time order (``Recorder(defer)`` and :meth:`Recorder.flush`).  The runner
tells each replica the next decision that could route work to it
(:meth:`sim.core.allocation.DecisionClock.for_replica`), so with round-robin routing a decision
wakes the replicas it may reach, not all of them.

With ``sample_s`` set, each replica records (running, waiting, KV blocks used) every
``sample_s`` seconds as it goes, as vLLM's periodic metrics logger does
(:func:`sample_timeseries`); samples inside a stretch are computed in closed form too.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass
from heapq import heappop, heappush

import numpy as np
import simpy

from sim.foundation.errors import UserError
from sim.core.stepmodels import LinearStepModel, TableStepModel, solve_steps

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
    feedback-driven policies can learn from completions as a server would.  With ``defer``
    they are called from :meth:`flush` instead, in time order, for the completions up to the
    time flushed: replicas may then compute (and finish requests) past the next decision, and
    the decision still hears of exactly the completions before it.
    """

    def __init__(self, n: int):
        self.scheduled_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.replica = np.full(n, -1, dtype=INT)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.listeners: list = []
        self.defer = False
        self._pending: list[tuple[float, int, np.ndarray]] = []  # (time, seq, idx), a heap
        self._seq = 0

    def mark_finished(self, idx, now: float) -> None:
        """Requests ``idx`` (an index array or list) finished at ``now``."""
        if len(idx) == 1:
            self.finish_s[idx[0]] = now
        elif len(idx) == 0:
            return
        else:
            self.finish_s[idx] = now
        if self.listeners:
            idx = np.asarray(idx, dtype=INT)
            if self.defer:
                heappush(self._pending, (now, self._seq, idx))
                self._seq += 1
                return
            for listener in self.listeners:
                listener(idx, now)

    def flush(self, upto: float = float("inf")) -> None:
        """Tell the listeners of the deferred completions at times <= ``upto``, in time order
        (ties in the order they were recorded)."""
        pending = self._pending
        while pending and pending[0][0] <= upto:
            now, _, idx = heappop(pending)
            for listener in self.listeners:
                listener(idx, now)


_INF = float("inf")


def _never() -> float:
    return _INF


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
    """One GPU engine: a loop over scheduler steps and closed-form stretches.

    Decoding requests live in ``_dec`` (request -> (context - off, tokens left + off, seq)),
    in admission order (a dict keeps insertion order; preemption pops the newest), relative to
    a step counter ``off`` that every decode step advances: a decoder's context is
    ``base + off`` and its tokens left ``end - off``, so a stretch of ``j`` steps is
    ``off += j``, O(1).  A heap of (end, seq, request) gives the next completion in O(log n)
    and the running sum of bases the decoders' context, so a step does no array work.  KV
    blocks held by decoders are summed on demand, only when a cheap upper bound says the cache
    could be short.

    The loop (:meth:`_core`) is a generator that yields how long to wait: as a SimPy process it
    waits on a timeout (``None``: on a dispatch); with ``ahead=True`` (every request fed before
    the run, nothing outside can add any) :meth:`run_ahead` drives it with a clock of its own
    and no SimPy event at all.  Either way ``now`` follows the same arithmetic
    (``now + (t - now)``), so both give the same bytes.
    """

    def __init__(self, env: simpy.Environment, cfg: EngineConfig, prompt_tokens: np.ndarray,
                 gen_tokens: np.ndarray, rec: Recorder, rid: int = 0, external=None,
                 ahead: bool = False):
        self.env = env
        #: Time of the next event outside the replicas that could hand this replica work (an
        #: allocation decision).  The runner knows its decision schedule and passes it; other
        #: callers get the conservative scan of SimPy's event queue (:func:`_horizon`).
        if ahead:
            external = _never
        self._external = external if external is not None else (lambda: _horizon(env))
        self._ahead = ahead
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
        self._dec: dict[int, tuple[int, int, int]] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._seq = 0
        self._bases = None  # cached numpy array of the decoders' bases, admission order
        # How many decoders have base % block_size == r: the blocks they hold at any step
        # follow from these counts in O(block_size) (:meth:`_dec_blocks`), no array.
        self._rcnt = [0] * cfg.block_size
        self._rsum = 0  # sum of r * _rcnt[r]: the decoders' base % block_size, summed
        self._dmin = 1 << 62  # min end: no decoder can finish before off reaches it
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
        self.now = env.now  # the loop's clock: env.now as a SimPy process would see it
        self._wake: simpy.Event | None = None
        self._in_step = False  # a step is in progress (its blocks are allocated)
        self._limit = cfg.kv_blocks if cfg.kv_blocks is not None else 1 << 62
        # Time series sampled every cfg.sample_s: time, running, waiting, KV blocks used.
        self._next_sample = cfg.sample_s if cfg.sample_s else float("inf")
        self.ts_t = array("d")
        self.ts_running = array("q")
        self.ts_waiting = array("q")
        self.ts_kv = array("q")
        self.process = None if ahead else env.process(self._loop())

    # -------------------------------------------------------------- state
    @property
    def running(self) -> int:
        return len(self._dec) + len(self.pre)

    @property
    def outstanding_tokens(self) -> int:
        """Generation tokens not yet produced at ``env.now``, for least-loaded routing (during a
        stretch in flight, minus the steps completed so far)."""
        if self._fly is None:
            return self._outstanding
        t0, a, b, n = self._fly
        return self._outstanding - n * solve_steps(a, b, self.env.now - t0)

    def _base_array(self) -> np.ndarray:
        if self._bases is None:
            self._bases = np.fromiter((v[0] for v in self._dec.values()), INT, len(self._dec))
        return self._bases

    def _dec_blocks(self, ahead: int = 0) -> int:
        """Blocks the decoders hold once ``ahead`` more tokens each are allocated:
        sum ceil((base + x) / bs) = (sum base + n (x + bs - 1) - sum (base + x + bs - 1) mod bs)
        / bs, x = off + ahead, and the remainders depend only on base mod bs (``_rcnt``)."""
        n = len(self._dec)
        if not n:
            return 0
        bs = self.cfg.block_size
        x = self.off + ahead + bs - 1
        # sum_r c_r ((r + x) mod bs) with xr = x mod bs: (r + xr) - bs when r >= bs - xr.
        xr = x % bs
        rem = self._rsum + n * xr
        if xr:
            rem -= bs * sum(self._rcnt[bs - xr:])
        return (self.base_sum + n * x - rem) // bs

    def _new_blocks(self) -> int:
        """Decoders that need a new block for their next token (context a multiple of bs)."""
        return self._rcnt[-self.off % self.cfg.block_size]

    @property
    def kv_used(self) -> int:
        return self._dec_blocks(1 if self._in_step else 0) + self.kv_pre

    def _ctx_sum(self) -> int:
        return self.base_sum + len(self._dec) * self.off

    def _kv_loose(self, steps: int, extra: int = 0) -> bool:
        """Whether the cache certainly holds the decoders ``steps`` tokens on, plus ``extra``
        blocks (sum ceil(x / bs) <= (sum x + n (bs - 1)) / bs)."""
        if self.cfg.kv_blocks is None:
            return True
        n, bs = len(self._dec), self.cfg.block_size
        bound = (self._ctx_sum() + n * (steps + bs - 1)) // bs
        return bound + self.kv_pre + extra <= self._limit

    # ---------------------------------------------------------- decoders
    def _add_decoders(self, to_dec) -> None:
        """Requests (index, context, tokens left) that finished their prefill become decoders."""
        dec, heap, off = self._dec, self._heap, self.off
        rcnt, bs = self._rcnt, self.cfg.block_size
        seq = self._seq
        added = 0
        rsum = self._rsum
        for i, c, rem in to_dec:
            base = c - off
            end = rem + off
            dec[i] = (base, end, seq)
            r = base % bs
            rcnt[r] += 1
            rsum += r
            heappush(heap, (end, seq, i))
            seq += 1
            added += base
        self._seq = seq
        self._rsum = rsum
        self.base_sum += added
        self._dmin = heap[0][0]
        self._bases = None

    def _settle(self) -> None:
        """Drop heap entries of decoders that left (preempted) and refresh the minimum end."""
        heap, dec = self._heap, self._dec
        while heap:
            end, seq, i = heap[0]
            v = dec.get(i)
            if v is not None and v[2] == seq:
                break
            heappop(heap)
        self._dmin = heap[0][0] if heap else 1 << 62
        self._bases = None

    def _retire(self, t: float) -> None:
        """Decoders whose last token came with the step that brought ``off`` to their end
        (with :meth:`_settle` inline: this runs once per completion)."""
        heap, dec, off = self._heap, self._dec, self.off
        rcnt, bs = self._rcnt, self.cfg.block_size
        fin = []
        gone = 0
        while heap:
            end, seq, i = heap[0]
            v = dec.get(i)
            live = v is not None and v[2] == seq
            if end > off and live:
                break
            heappop(heap)
            if live:
                del dec[i]
                gone += v[0]
                r = v[0] % bs
                rcnt[r] -= 1
                self._rsum -= r
                fin.append(i)
        self._dmin = heap[0][0] if heap else 1 << 62
        self._bases = None
        self.base_sum -= gone
        if fin:
            rec = self.rec
            if len(fin) == 1 and not rec.listeners:
                rec.finish_s[fin[0]] = t
            else:
                rec.mark_finished(fin, t)

    # -------------------------------------------------------------- intake
    def dispatch(self, idx: np.ndarray, at_s: np.ndarray | None = None) -> None:
        """Hand requests to this replica now (or, for a schedule known ahead, at times
        ``at_s``, non-decreasing); they reach its scheduler after the CPU overhead."""
        if at_s is None and len(idx) == 1:  # one live decision's one request: no arrays
            self._dispatch_one(int(idx[0]))
            return
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

    def _dispatch_one(self, i: int) -> None:
        """:meth:`dispatch` of one request now, in scalars (same checks, same times)."""
        cfg = self.cfg
        g = int(self.gen[i])
        if cfg.kv_blocks is not None:
            need = -(-(int(self.prompt[i]) + g - 1) // cfg.block_size)
            if need > cfg.kv_blocks:
                self.dispatch(np.array([i, i], dtype=INT))  # the array path raises the error
        self.rec.replica[i] = self.rid
        self._outstanding += g
        self._feed_t.append(self.env.now + cfg.request_overhead_s)
        self._feed_i.append(i)
        wake = self._wake
        if wake is not None and not wake.triggered:
            wake.succeed()

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
        return self._feed_t[self._fp] if self._fp < len(self._feed_t) else _INF

    def _take_fed(self, t: float) -> None:
        """Move every fed request whose time has come (<= t) into the waiting queue."""
        ft, p, m = self._feed_t, self._fp, len(self._feed_t)
        if p < m and ft[p] <= t:
            q = p + 1
            while q < m and ft[q] <= t:
                q += 1
            if q == p + 1:
                self.waiting.append(self._feed_i[p])
            else:
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
        """The SimPy process: wait as :meth:`_core` says (a timeout, or a dispatch)."""
        env = self.env
        for delay in self._core():
            if delay is None:
                self._wake = _Wake(env)
                yield self._wake
                self._wake = None
            else:
                yield _StepTimeout(env, delay)
            self.now = env.now

    def run_ahead(self) -> None:
        """Serve everything fed so far without SimPy (``ahead=True``): every wait is a clock
        update, ``now + delay`` as SimPy would compute it; stops when idle with nothing fed."""
        if not self._ahead:
            raise ValueError("run_ahead is for replicas built with ahead=True")
        for delay in self._core():
            if delay is None:
                return
            self.now = self.now + delay

    def _core(self):
        """The scheduler loop; yields a delay to wait (``None``: until a dispatch)."""
        t = self.now
        zero_yielded = False
        sampling = self.cfg.sample_s is not None
        external = self._external
        cfg = self.cfg
        max_seqs = cfg.max_num_seqs
        feed_t = self._feed_t
        feed_i = self._feed_i
        dec = self._dec
        waiting = self.waiting
        max_tokens = cfg.max_num_batched_tokens
        step = cfg.step
        kv_on = cfg.kv_blocks is not None
        limit = self._limit
        bs = cfg.block_size
        prompt = self.prompt
        ahead = self._ahead
        while True:
            fp = self._fp
            if fp < len(feed_t) and feed_t[fp] <= t:
                if fp + 1 < len(feed_t) and feed_t[fp + 1] <= t:
                    self._take_fed(t)
                else:
                    waiting.append(feed_i[fp])
                    self._fp = fp + 1
            if not waiting and not self.pre and not dec:
                if sampling and self._next_sample <= t:
                    self._sample_until(t + 1e-12)
                nxt = self._next_fed()
                if nxt < _INF:
                    yield nxt - self.now
                else:
                    yield None
                t = self.now
                feed_t = self._feed_t
                if sampling and self._next_sample < t:
                    self._sample_until(t)
                zero_yielded = False
                continue
            horizon = _INF if ahead else external()
            nxt = feed_t[self._fp] if self._fp < len(feed_t) else _INF
            if nxt < horizon:
                horizon = nxt
            if horizon <= t and not zero_yielded:
                # Same-time events pending (e.g. an arrival now): let them in before scheduling.
                zero_yielded = True
                yield max(0.0, t - self.now)
                feed_t = self._feed_t
                continue
            zero_yielded = False
            # Plan a decode-only stretch (:meth:`_plan_stretch`, its array-free cases inline).
            stretch = None
            if dec and not self.pre:
                n = len(dec)
                off = self.off
                if not waiting or n >= max_seqs or max_tokens <= n:  # nobody admissible
                    k = self._dmin - off
                    if not kv_on or ((self.base_sum + n * (off + k + bs - 1)) // bs + self.kv_pre
                                     <= limit):
                        stretch = (k,) + step.decode_stretch(n, self.base_sum + n * off + n)
                    else:
                        stretch = self._plan_stretch()
                elif kv_on:
                    i = waiting[0]
                    first = int(prompt[i]) + self._emitted.get(i, 0)
                    if first > max_tokens - n:
                        first = max_tokens - n
                    if ((self.base_sum + n * (off + bs)) // bs + self.kv_pre - (-first // bs)
                            > limit):  # not certainly admissible: the exact check
                        stretch = self._plan_stretch()
            if stretch is not None:
                j, a, b = stretch
                if len(dec) >= max_seqs or waiting:
                    # Nobody can join before the next completion whatever arrives (batch full,
                    # or the queue's head does not fit and FCFS keeps the rest behind it): run
                    # the whole stretch in one event.
                    jh, wait = j, True
                else:
                    jh = solve_steps(a, b, horizon - t)
                    wait = False
                    if jh >= j:
                        jh = j
                    elif jh == 0 or t + (jh * a + b * jh * (jh - 1) * 0.5) < horizon:
                        # A step is in progress when the next event happens (whatever it brings
                        # joins at that step's end): run the steps that end by then and that
                        # one in one go, waiting (as a SimPy process) for its end.
                        jh += 1
                        wait = not ahead
                dt = jh * a + b * jh * (jh - 1) * 0.5
                if wait:
                    self._fly = (t, a, b, len(dec))
                    self._in_step = True
                    yield t + dt - self.now
                    feed_t = self._feed_t
                    self._in_step = False
                    self._fly = None
                if sampling and self._next_sample < t + dt:
                    self._sample_until(t + dt, t, a, b)
                t += dt
                self._apply_stretch(jh, j, dt, t)
                continue
            if waiting and not self.pre:
                # (Without SimPy a step may end past the horizon: nothing waits on it.)
                t_end = self._admit_whole(t, _INF if ahead else horizon)
                if t_end is not None:
                    t = t_end
                    continue
            plan = self._plan_step(t)
            t_end = t + plan[0]
            self._in_step = True
            if t_end > horizon:
                yield t_end - self.now
                feed_t = self._feed_t
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
        n = len(self._dec)
        if self.pre or n == 0:
            return None
        cfg = self.cfg
        k = self._dmin - self.off
        budget = cfg.max_num_batched_tokens - n
        admit = bool(self.waiting) and n < cfg.max_num_seqs and budget > 0
        if cfg.kv_blocks is None:
            if admit:
                return None
        else:
            first = self._first_chunk_blocks(budget) if admit else 0
            if admit and self._kv_loose(1, first):
                return None  # admissible now: a general step
            if not self._kv_loose(k) or admit:
                held = self._dec_blocks()
                new_now = self._new_blocks()
                free = self._limit - held
                if new_now > free:
                    return None  # preemption at this step
                if admit and first <= free - new_now:
                    return None
                # Blocks taken over j steps: sum ceil((c + j)/bs) - held; stop before the
                # first step that would not get its block (it preempts: a general step).
                if not self._kv_loose(k):
                    def demand(j: int) -> int:
                        return self._dec_blocks(j) - held

                    if demand(k) > free:
                        lo, hi = 1, k  # demand(lo) <= free (new_now <= free), demand(hi) > free
                        while hi - lo > 1:
                            mid = (lo + hi) // 2
                            if demand(mid) <= free:
                                lo = mid
                            else:
                                hi = mid
                        k = lo
        a, b = cfg.step.decode_stretch(n, self.base_sum + n * self.off + n)
        return k, a, b

    def _apply_stretch(self, j: int, k_done: int, dt: float, t: float) -> None:
        self.busy_s += dt
        self.steps += j
        self.off += j
        self._outstanding -= j * len(self._dec)
        if j >= k_done and self.off >= self._dmin:
            self._retire(t)

    # ------------------------------------------------------- general steps
    def _preempt(self, i: int, emitted: int) -> None:
        self._emitted[i] = emitted
        self.waiting.appendleft(i)
        self.rec.preemptions[i] += 1
        self.preemptions += 1

    def _may_run_short(self, n: int) -> bool:
        """Whether the cache could run short in the next general step (``n`` decoders): the
        decoders a token on plus the most blocks prefill and admissions can take (the step's
        whole token budget, a block each for the prefilling and admitted requests) exceed it
        (:meth:`_kv_loose`'s bound).  If not, the step needs no exact KV bookkeeping."""
        cfg = self.cfg
        if cfg.kv_blocks is None:
            return False
        bs = cfg.block_size
        return ((self.base_sum + n * (self.off + bs)) // bs + self.kv_pre
                - (-cfg.max_num_batched_tokens // bs) + len(self.pre) + cfg.max_num_seqs
                > self._limit)

    def _plan_step(self, t: float):
        """Schedule one step at time ``t`` as vLLM V1 does; returns what :meth:`_apply_step` needs."""
        cfg = self.cfg
        bs = cfg.block_size
        budget = cfg.max_num_batched_tokens
        dec = self._dec
        n = len(dec)
        limited = self._may_run_short(n)  # exact KV bookkeeping only then
        preempted = False
        free = 0
        if limited:
            free = self._limit - self._dec_blocks() - self.kv_pre
            need = self._new_blocks()
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
                    ctx = self._base_array() + self.off
                    held = -(-ctx // bs)
                    newb = (ctx % bs == 0).astype(INT)
                    prefix = np.concatenate(([0], np.cumsum(newb)))
                    suffix = np.concatenate((np.cumsum(held[::-1])[::-1], [0]))
                    keep = int(np.searchsorted(prefix - suffix, free, side="right")) - 1
                    gen, off = self.gen, self.off
                    gone = 0
                    for _ in range(n - keep):
                        i, (base, end, _seq) = dec.popitem()  # the newest decoder first
                        gone += base
                        self._rcnt[base % bs] -= 1
                        self._rsum -= base % bs
                        self._preempt(i, int(gen[i]) - (end - off))
                    free += int(held[keep:].sum())
                    self.base_sum -= gone
                    self._settle()
                    n = keep
                    need = int(newb[:keep].sum())
            free -= need
        budget -= n
        chunks: list[tuple[list[int], int]] = []  # (entry, tokens computed this step)
        prefill = 0
        k = 0
        pre = self.pre
        while k < len(pre) and budget > 0:
            entry = pre[k]
            num = min(entry[2] - entry[1], budget)
            extra = -(-(entry[1] + num) // bs) - (-(-entry[1] // bs))
            if limited:
                gone = False
                while extra > free:
                    victim = pre.pop()
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
            waiting = self.waiting
            running = n + len(pre)
            if waiting and running < cfg.max_num_seqs and budget > 0:
                prompt, emitted = self.prompt, self._emitted
                while waiting and running < cfg.max_num_seqs and budget > 0:
                    i = waiting[0]
                    o = emitted.get(i, 0) if emitted else 0
                    target = int(prompt[i]) + o
                    num = target if target < budget else budget
                    blocks = -(-num // bs)
                    if limited:
                        if blocks > free:
                            break
                        free -= blocks
                    self.kv_pre += blocks
                    waiting.popleft()
                    if o:
                        del emitted[i]
                    entry = [i, 0, target, o]
                    pre.append(entry)
                    chunks.append((entry, num))
                    new.append(i)
                    prefill += num
                    budget -= num
                    running += 1
        if new:
            sched = self.rec.scheduled_s
            for i in new:
                if sched[i] != sched[i]:  # NaN: first time scheduled
                    sched[i] = t
        dctx = self.base_sum + n * self.off + n if n else 0
        dt = cfg.step.step_s(prefill, n, dctx)
        return dt, chunks

    def _admit_whole(self, t: float, horizon: float) -> float | None:
        """The commonest general step, planned and applied at once when nothing outside can
        happen while it runs (it ends by ``horizon``): no prefill in progress and the cache
        certainly large enough.  Every request admitted but the last fits its whole
        (re)prefill in the step, so each leaves it decoding (or finished); the last may take
        what is left of the token budget as a first chunk and go on prefilling.  Same
        arithmetic as :meth:`_plan_step` then :meth:`_apply_step`; returns the step's end, or
        None (nothing changed) when the general path is needed: a possible KV shortage, a
        sample due, or an event during the step."""
        cfg = self.cfg
        dec = self._dec
        n = len(dec)
        budget = cfg.max_num_batched_tokens - n
        room = cfg.max_num_seqs - n
        if budget <= 0 or room <= 0:
            return None
        bs = cfg.block_size
        if self._may_run_short(n):
            return None
        waiting, prompt, emitted = self.waiting, self.prompt, self._emitted
        # Who is admitted: FCFS while there is room and budget; the first that does not fit
        # whole takes the rest of the budget as its first chunk and ends the admissions.
        targets = []
        prefill = 0
        partial = 0  # tokens of the first chunk of a last admitted request that does not fit
        item = prompt.item
        for i in waiting:
            if len(targets) >= room or budget <= 0:
                break
            target = item(i) + (emitted.get(i, 0) if emitted else 0)
            if target > budget:
                partial, part_target = budget, target
                prefill += budget
                break
            targets.append(target)
            prefill += target
            budget -= target
        m = len(targets)
        dt = cfg.step.step_s(prefill, n, self.base_sum + n * self.off + n if n else 0)
        t_end = t + dt
        if t_end > horizon or self._next_sample < t_end:
            return None  # a wait, or a sample inside the step that counts its blocks
        rec = self.rec
        sched, ft, gen = rec.scheduled_s, rec.first_token_s, self.gen
        self.busy_s += dt
        self.steps += 1
        if n:
            self.off += 1
            if self.off >= self._dmin:
                self._retire(t_end)
        fin, to_dec = [], []
        for target in targets:
            i = waiting.popleft()
            o = emitted.pop(i, 0) if emitted else 0
            if o == 0:
                ft[i] = t_end
            if sched.item(i) != sched.item(i):  # NaN: first time scheduled
                sched[i] = t
            g = gen.item(i)
            if o + 1 >= g:
                fin.append(i)
            else:
                to_dec.append((i, target, g - o - 1))
        if partial:  # admitted last, it goes on prefilling in the next steps
            i = waiting.popleft()
            o = emitted.pop(i, 0) if emitted else 0
            if sched.item(i) != sched.item(i):
                sched[i] = t
            self.pre.append([i, partial, part_target, o])
            self.kv_pre += -(-partial // bs)
        if to_dec:
            self._add_decoders(to_dec)
        if fin:
            rec.mark_finished(fin, t_end)
        self._outstanding -= n + m
        return t_end

    def _apply_step(self, plan, t: float) -> None:
        dt, chunks = plan
        self.busy_s += dt
        self.steps += 1
        n = len(self._dec)
        emitted = n
        if n:
            self.off += 1
            if self.off >= self._dmin:
                self._retire(t)
        if chunks:
            bs = self.cfg.block_size
            gen = self.gen
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
                g = int(gen[i])
                if o + 1 >= g:
                    fin.append(i)
                else:
                    to_dec.append((i, c, g - o - 1))
            if first:
                ft = self.rec.first_token_s
                for i in first:
                    ft[i] = t
            done_entries = len(fin) + len(to_dec)
            if done_entries:
                # Requests finish prefill in order, so they are the head of ``pre``.
                del self.pre[:done_entries]
            if to_dec:
                self._add_decoders(to_dec)
            if fin:
                self.rec.mark_finished(fin, t)
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
            if len(idx) == 1:
                k = self._next % r
                self._next = (self._next + 1) % r
                self.replicas[k].dispatch(idx)
                return
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
