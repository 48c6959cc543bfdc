"""Where sweep tasks run: in this process, in a process pool, or on Dask.

Every executor has the same small shape, ``map_unordered(fn, tasks)`` yielding ``(task,
result)`` pairs as tasks finish, so the sweep driver (which alone writes files) does not care
where work happens.  Results travel back to the driver instead of workers writing files, which
is what lets ``dask://HOST:PORT`` run on a cluster whose workers share no file system with us.

Executor specs (``--executor``):

* ``local``: serial, in this process.
* ``processes[:N]``: a local process pool of N workers (default: the number of cores).
* ``dask-local[:N]``: a ``dask.distributed.LocalCluster`` of N single-threaded worker processes.
* ``dask://HOST:PORT``: join a running Dask scheduler (``dask scheduler``); its workers need
  clearsim installed.

On Dask, the dashboard's address is announced as soon as the client is connected, and a
scheduler without workers is waited on for at most ``worker_timeout`` seconds
(:data:`WORKER_TIMEOUT_S`), then refused with a one-line error: a sweep never hangs silently
on a cluster that cannot run it, and since this happens before the sweep writes anything, its
output folder is not created.

Workers can also go away mid-sweep (killed, out of memory, their machine gone).  A pool whose
worker process died, a Dask task that killed the workers it ran on
(``distributed.scheduler.allowed-failures`` + 1 times), and a Dask scheduler left with no
worker for ``worker_timeout`` seconds all end the map with a one-line :class:`UserError`; the
tasks finished before are already saved by the sweep, so ``--resume`` runs only the rest.
"""

from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from sim.foundation.errors import UserError

EXECUTOR_HELP = "local, processes[:N], dask-local[:N] or dask://HOST:PORT"
#: How long a Dask executor waits for a scheduler's first worker before giving up (seconds).
WORKER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ExecutorSpec:
    kind: str  # "local" | "processes" | "dask-local" | "dask"
    workers: int | None = None
    address: str | None = None

    def __str__(self) -> str:
        if self.kind == "dask":
            return f"dask://{self.address}"
        return self.kind + (f":{self.workers}" if self.workers else "")


def parse_executor(text: str) -> ExecutorSpec:
    """Parse an ``--executor`` value, or raise a one-line :class:`UserError`."""
    text = (text or "").strip()
    if text == "local":
        return ExecutorSpec("local")
    m = re.fullmatch(r"(processes|dask-local)(?::(\d+))?", text)
    if m:
        n = int(m.group(2)) if m.group(2) else None
        if n is not None and n < 1:
            raise UserError(f"executor '{text}': the number of workers must be >= 1")
        return ExecutorSpec(m.group(1), n)
    m = re.fullmatch(r"dask://([A-Za-z0-9_.\-\[\]:]+):(\d+)", text)
    if m:
        return ExecutorSpec("dask", address=f"{m.group(1)}:{m.group(2)}")
    raise UserError(f"unknown executor '{text}'; expected {EXECUTOR_HELP}")


class Executor:
    """Runs ``fn`` over tasks; a context manager that owns its workers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def map_unordered(self, fn: Callable, tasks: Iterable) -> Iterator[tuple[object, object]]:
        raise NotImplementedError


class LocalExecutor(Executor):
    def map_unordered(self, fn, tasks):
        for t in tasks:
            yield t, fn(t)


def _die_with_parent() -> None:
    """Pool initializer: on Linux, the kernel sends the worker SIGTERM when the sweep process
    dies, even by SIGKILL (a killed ``processes`` sweep left its workers running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass  # not Linux: workers end when they find the call queue closed


class ProcessExecutor(Executor):
    def __init__(self, workers: int | None):
        self.pool = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1,
                                        initializer=_die_with_parent)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def map_unordered(self, fn, tasks):
        futures = {self.pool.submit(fn, t): t for t in tasks}
        for yielded, f in enumerate(as_completed(futures)):
            try:
                result = f.result()
            except BrokenProcessPool:
                raise UserError(
                    "a worker process of the pool died (killed, or out of memory) with "
                    f"{len(futures) - yielded} "
                    "task(s) unfinished; the finished ones are saved: rerun with --resume, "
                    "with fewer workers (processes:N) if memory is short") from None
            yield futures[f], result


#: Dask settings for our own LocalCluster: the event-loop tick (20 ms), the statistical profiler
#: (every 10 ms) and the system and memory monitors wake each worker's event loop, which then
#: takes the GIL from the simulation running in the worker's thread; simulations need none of
#: them (measured: about 8% more throughput on 2 cores, benchmarks/sweep.py).
QUIET_WORKERS = {
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.profile.enabled": False,
    "distributed.worker.memory.monitor-interval": "5s",
}


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class DaskExecutor(Executor):
    """A ``dask.distributed`` client, on a fresh LocalCluster or an existing scheduler.

    ``notify`` receives one-line notices (the dashboard address, a wait for workers); the
    sweep sends them to its progress stream.  Without a worker after ``worker_timeout``
    seconds, the client is closed and a :class:`UserError` raised.
    """

    def __init__(self, spec: ExecutorSpec, connect_timeout: float = 10.0,
                 worker_timeout: float = WORKER_TIMEOUT_S,
                 notify: Callable[[str], None] | None = None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - dask is a dependency
            raise UserError("executor 'dask': install dask[distributed]") from None
        if not worker_timeout > 0:
            raise UserError(f"worker timeout must be > 0 seconds, got {worker_timeout!r}",
                            field="worker_timeout")
        notify = notify or _stderr
        self.worker_timeout = worker_timeout
        self.cluster = None
        if spec.kind == "dask-local":
            import dask.config

            n = spec.workers or os.cpu_count() or 1
            # Loopback only, a free port for the scheduler's HTTP server (never a taken 8787),
            # and fewer housekeeping wake-ups that steal the GIL from a running simulation.
            with dask.config.set(QUIET_WORKERS):
                self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                            silence_logs=50)
            self.client = Client(self.cluster)
            where = f"LocalCluster of {n} worker{'s' * (n != 1)}"
        else:
            import dask.config

            try:
                # The comm timeout bounds each connection attempt; Client's timeout the whole.
                with dask.config.set({"distributed.comm.timeouts.connect": f"{connect_timeout}s"}):
                    self.client = Client(f"tcp://{spec.address}", timeout=f"{connect_timeout}s")
            except (OSError, TimeoutError) as exc:
                raise UserError(f"cannot reach the Dask scheduler at tcp://{spec.address} within "
                                f"{connect_timeout:g} s ({exc.__class__.__name__}); start one "
                                "with 'dask scheduler' or use --executor dask-local") from None
            where = f"scheduler tcp://{spec.address}"
        try:
            link = self.dashboard_link()
            notify(f"dask: {where}, " + (f"dashboard {link}" if link else "no dashboard"))
            self._wait_for_workers(worker_timeout, notify)
        except BaseException:
            self.close()
            raise

    def dashboard_link(self) -> str | None:
        """The dashboard's URL: the scheduler's host as we reached it, the port it reports.

        A scheduler without bokeh>=3.1 still reports one, serving "Dask needs bokeh" (hence
        the diagnostics extra in our dependencies); None when it reports no HTTP service.
        """
        try:
            return self.client.dashboard_link or None
        except (KeyError, AttributeError, OSError):  # no "dashboard" service on the scheduler
            return None

    def workers(self) -> int:
        return len(self.client.nthreads())

    def _wait_for_workers(self, timeout: float, notify) -> None:
        if self.workers():
            return
        address = self.client.scheduler.address
        notify(f"dask: no workers on {address} yet; waiting up to {timeout:g} s for one "
               f"(start one with 'dask worker {address}')")
        try:
            self.client.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise UserError(f"the Dask scheduler at {address} has no workers after "
                            f"{timeout:g} s; start one with 'dask worker "
                            f"{address}', or wait longer with --worker-timeout SECONDS (now "
                            f"{timeout:g})") from None

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    #: How often a map waiting on Dask checks that the scheduler still has workers (seconds).
    POLL_S = 1.0
    #: How long it sleeps between looks for finished tasks while none is ready (seconds).
    TICK_S = 0.02

    def map_unordered(self, fn, tasks):
        from dask.distributed import as_completed as dask_completed
        from distributed import KilledWorker

        tasks = list(tasks)
        futures = [self.client.submit(fn, t, pure=False) for t in tasks]
        index = {f.key: t for f, t in zip(futures, tasks)}
        done = dask_completed(futures)
        left = len(futures)
        alone_since = None  # when the scheduler was first seen without workers
        checked = time.monotonic()
        while left:
            ready = done.next_batch(block=False)  # O(finished), not O(pending), per look
            for f in ready:
                left -= 1
                try:
                    result = f.result()
                except KilledWorker as exc:
                    raise UserError(
                        f"a task killed every Dask worker that ran it ({exc.__class__.__name__}: "
                        "out of memory or a crash, retried "
                        f"distributed.scheduler.allowed-failures times) with {left + 1} "
                        "task(s) unfinished; the finished ones are saved: rerun with --resume "
                        "on workers with more memory") from None
                f.release()
                yield index[f.key], result
            if ready or not left:
                alone_since = None
                continue
            time.sleep(self.TICK_S)
            now = time.monotonic()
            if now - checked < self.POLL_S:
                continue
            checked = now
            if self.workers():
                alone_since = None
            elif alone_since is None:
                alone_since = now
            elif now - alone_since >= self.worker_timeout:
                address = self.client.scheduler.address
                raise UserError(
                    f"the Dask scheduler at {address} has had no workers for "
                    f"{self.worker_timeout:g} s with {left} task(s) unfinished (its "
                    "workers died or left); the finished ones are saved: start workers with "
                    f"'dask worker {address}' and rerun with --resume, or wait longer with "
                    "--worker-timeout SECONDS")


def open_executor(spec: ExecutorSpec, connect_timeout: float = 10.0,
                  worker_timeout: float = WORKER_TIMEOUT_S,
                  notify: Callable[[str], None] | None = None) -> Executor:
    if spec.kind == "local":
        return LocalExecutor()
    if spec.kind == "processes":
        return ProcessExecutor(spec.workers)
    return DaskExecutor(spec, connect_timeout, worker_timeout, notify)
