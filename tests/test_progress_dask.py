"""Dask executors against a real scheduler: the dashboard's address is announced, a scheduler
without workers is waited on for a bounded time, then refused (exit 2, nothing written), and a
worker that joins during the wait is used."""

from __future__ import annotations

import io
import threading
import time
import urllib.request

import pytest
import yaml

from sim.experiments.cli import main
from sim.foundation.progress import ProgressOptions
from sim.experiments.sweep import sweep

distributed = pytest.importorskip("distributed")


def small_sweep(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"base": "default", "grid": {"budget": [200, 800]},
                                    "policies": ["uniform"], "seeds": [0],
                                    "set": {"arrivals.queries": 150}}))
    return path


@pytest.fixture
def empty_scheduler():
    """A real scheduler with no workers (threads, not processes, when one is added later)."""
    with distributed.LocalCluster(n_workers=0, processes=False, threads_per_worker=1, protocol="tcp",
                                  host="127.0.0.1", scheduler_port=0,
                                  dashboard_address="127.0.0.1:0", silence_logs=50) as cluster:
        yield cluster


def test_no_workers_gives_one_error_line_exit_2_within_the_bound(tmp_path, capsys,
                                                                  empty_scheduler):
    address = empty_scheduler.scheduler_address
    out = tmp_path / "out"
    t0 = time.monotonic()
    code = main(["sweep", str(small_sweep(tmp_path)), "--out", str(out), "--no-report",
                 "--executor", f"dask://{address.removeprefix('tcp://')}",
                 "--worker-timeout", "1"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert 1.0 <= took < 15, took  # waited the 1 s asked for, not forever (connecting: < 1 s)
    assert "Traceback" not in err
    notices, error = err.strip().splitlines()[:-1], err.strip().splitlines()[-1]
    assert error.startswith("clearsim: error: the Dask scheduler at " + address)
    assert "no workers after 1 s" in error and "--worker-timeout" in error and \
        f"dask worker {address}" in error
    # Before the error: the dashboard (at the address the scheduler reports) and the wait.
    assert notices == [f"dask: scheduler {address}, dashboard {empty_scheduler.dashboard_link}",
                       f"dask: no workers on {address} yet; waiting up to 1 s for one (start one "
                       f"with 'dask worker {address}')"]
    with urllib.request.urlopen(empty_scheduler.dashboard_link, timeout=10) as page:
        body = page.read().decode()
    # A real dashboard is served there (without bokeh, Dask serves "Dask needs bokeh" instead).
    assert "<title>Dask Diagnostic UI</title>" in body and "Dask needs" not in body
    assert not out.exists()  # nothing half-written: the folder was never created


def test_a_worker_joining_during_the_wait_runs_the_sweep(tmp_path, empty_scheduler):
    address = empty_scheduler.scheduler_address.removeprefix("tcp://")
    stream = io.StringIO()
    joiner = threading.Timer(0.5, lambda: empty_scheduler.scale(1))
    joiner.start()
    try:
        res = sweep(small_sweep(tmp_path), out=tmp_path / "out", executor=f"dask://{address}",
                    worker_timeout=60, report=False,
                    progress=ProgressOptions(stream=stream, interval_s=0))
    finally:
        joiner.cancel()
    assert len(res.results) == 2 and res.ran == 2
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"dask: scheduler tcp://{address}, dashboard {empty_scheduler.dashboard_link}"
    assert lines[1].startswith(f"dask: no workers on tcp://{address} yet; waiting up to 60 s")
    assert lines[2].startswith("sweep d: 0/2 tasks") and lines[-1].startswith("sweep d: 2/2 tasks")


def test_worker_timeout_must_be_positive(tmp_path, capsys):
    assert main(["sweep", str(small_sweep(tmp_path)), "--worker-timeout", "0"]) == 2
    assert "argument --worker-timeout: '0' must be > 0" in capsys.readouterr().err

