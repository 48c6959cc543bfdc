"""Workers that die mid-sweep: the map ends with one line (a :class:`UserError` naming what
happened and that ``--resume`` runs the rest), never a traceback and never a hang.  Against real
process pools and real Dask clusters."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sim.experiments.executors import DaskExecutor, ExecutorSpec, ProcessExecutor
from sim.foundation.errors import UserError


def _die_on_one(t: int) -> int:
    if t == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the pool's worker dies, as under the OOM killer
    time.sleep(0.2)
    return t


def test_a_dead_pool_worker_is_one_error_not_a_traceback():
    got = []
    with ProcessExecutor(2) as ex:
        with pytest.raises(UserError) as exc:
            for task, result in ex.map_unordered(_die_on_one, [0, 1, 2, 3]):
                got.append(result)
    msg = str(exc.value)
    assert "\n" not in msg and "worker process of the pool died" in msg and "--resume" in msg
    assert set(got) <= {0, 2, 3}


distributed = pytest.importorskip("distributed")


def _cluster(**config):
    import dask.config

    with dask.config.set(config):
        return distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                        host="127.0.0.1", scheduler_port=0,
                                        dashboard_address="127.0.0.1:0", silence_logs=50)


def test_a_task_that_kills_its_workers_is_one_error():
    """Dask retries a task whose worker died; past allowed-failures it is a KilledWorker."""
    with _cluster(**{"distributed.scheduler.allowed-failures": 0}) as cluster:
        spec = ExecutorSpec("dask", address=cluster.scheduler_address.removeprefix("tcp://"))
        with DaskExecutor(spec, notify=lambda _: None) as ex:
            with pytest.raises(UserError) as exc:
                list(ex.map_unordered(os._exit, [3]))
    msg = str(exc.value)
    assert "\n" not in msg and "killed every Dask worker" in msg and "--resume" in msg


def test_a_scheduler_left_without_workers_mid_map_is_one_error_within_the_bound():
    with _cluster() as cluster:
        spec = ExecutorSpec("dask", address=cluster.scheduler_address.removeprefix("tcp://"))
        with DaskExecutor(spec, worker_timeout=1.5, notify=lambda _: None) as ex:
            leave = threading.Timer(1.0, lambda: cluster.scale(0))
            leave.start()
            t0 = time.monotonic()
            try:
                with pytest.raises(UserError) as exc:
                    list(ex.map_unordered(time.sleep, [60, 60]))
            finally:
                leave.cancel()
            took = time.monotonic() - t0
    msg = str(exc.value)
    assert "no workers for 1.5 s with 2 task(s) unfinished" in msg and "--resume" in msg
    assert 2.5 <= took < 30, took  # the worker left after 1 s, then the 1.5 s bound, not 60 s
