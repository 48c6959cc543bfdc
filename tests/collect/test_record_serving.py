"""The serving recorder's load and its bad input (no vLLM needed; the real runs are in
tests/vllm_real)."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from helpers import cli_error
from traces.collect.loadgen import poisson_schedule


def test_poisson_schedule_rate_lengths_and_seed():
    """Exponential gaps: the mean gap is 1/rate within 5 standard errors (sd = mean for an
    exponential, so se = 1/(rate sqrt(n))), and the coefficient of variation is ~1."""
    rate, n = 4.0, 20_000
    t, prompt, output = poisson_schedule(rate, n, 7, (32, 256), (8, 64))
    gaps = np.diff(t)
    assert t[0] == 0.0 and np.all(gaps >= 0)
    assert abs(gaps.mean() - 1 / rate) < 5 / (rate * np.sqrt(n - 1))
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05
    assert prompt.min() >= 32 and prompt.max() <= 256 and output.min() >= 8 and output.max() <= 64
    again = poisson_schedule(rate, n, 7, (32, 256), (8, 64))
    assert all(np.array_equal(a, b) for a, b in zip((t, prompt, output), again))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_does_not_answer(capsys, tmp_path):
    out = tmp_path / "runs"
    cli_error(capsys, ["traces", "record-serving", "--endpoint",
                       f"http://127.0.0.1:{_closed_port()}/v1", "--rates", "1", "--out", str(out)],
              "does not answer", "--endpoint")
    assert not out.exists()


def test_only_loopback(capsys, tmp_path):
    cli_error(capsys, ["traces", "record-serving", "--endpoint", "http://192.0.2.1:8000/v1",
                       "--rates", "1", "--out", str(tmp_path / "r")], "loopback")
    assert not (tmp_path / "r").exists()


def test_a_model_folder_that_is_not_a_model(capsys, tmp_path, addition):
    bad = tmp_path / "notamodel"
    bad.mkdir()
    (bad / "README").write_text("hello")
    cli_error(capsys, ["traces", "record-serving", "--serve", str(bad), "--rates", "1",
                       "--out", str(tmp_path / "r")], "config.json", str(bad))
    cli_error(capsys, ["traces", "collect", "--model", str(bad), "--problems", str(addition),
                       "--name", "x"], "config.json", str(bad))
    cli_error(capsys, ["traces", "collect", "--model", str(tmp_path / "absent"), "--problems",
                       str(addition), "--name", "x"], "no such model folder")
    assert not (tmp_path / "r").exists()
    assert not list((tmp_path / "home").glob("traces/x*"))


def test_tiny_model_refuses_a_folder_in_use(capsys, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    cli_error(capsys, ["traces", "tiny-model", str(d)], "not an empty folder")
    assert (d / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("args, text", [
    (["--rates", "0"], "--rates"),
    (["--rates", "1", "--prompt-tokens", "9,3"], "--prompt-tokens"),
])
def test_bad_load_options(capsys, tmp_path, args, text):
    cli_error(capsys, ["traces", "record-serving", "--endpoint",
                       f"http://127.0.0.1:{_closed_port()}/v1", "--out", str(tmp_path / "r"), *args],
              text)


def test_record_against_a_server_writes_what_calibrate_reads(tmp_path, capsys):
    """The whole recorder against the fake server (the real one: tests/vllm_real): one folder
    per rate with the pinned lengths, the server's KV size, and a load that calibrate reads."""
    import json

    from collect_fakes import FakeOpenAIServer, ServerControl
    from sim.experiments.calibrate import load_run
    from sim.experiments.cli import main

    with FakeOpenAIServer(ServerControl(delay=0.02)) as server:
        assert main(["traces", "record-serving", "--endpoint", server.url, "--rates", "20,40",
                     "--requests", "15", "--prompt-tokens", "5,9", "--output-tokens", "2,6",
                     "--max-num-seqs", "8", "--tick-seconds", "0.1", "--name", "fake",
                     "--out", str(tmp_path / "runs")]) == 0
        bodies = list(server.control.bodies)
    assert [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("wrote")] == [
        f"wrote {tmp_path / 'runs' / 'fake_r20'}", f"wrote {tmp_path / 'runs' / 'fake_r40'}"]
    assert len(bodies) == 30 and all(b["ignore_eos"] and b["stream"] for b in bodies)
    for k, rate in enumerate((20, 40)):
        d = tmp_path / "runs" / f"fake_r{rate}"
        _, prompt, output = poisson_schedule(rate, 15, 1000 * k, (5, 9), (2, 6))
        rows = [json.loads(line) for line in (d / "requests.jsonl").read_text().splitlines()]
        assert sorted(r["output_toks"] for r in rows) == sorted(output.tolist())
        assert sorted(r["input_toks"] for r in rows) == sorted(prompt.tolist())
        meta = json.loads((d / "meta.json").read_text())
        assert meta["kv_cache"] == {"num_gpu_blocks": 4096, "block_size": 128}
        assert meta["load"]["rate_per_s"] == rate and meta["engine_kwargs"]["max_num_seqs"] == 8
        run = load_run(d)
        assert run.flags["kv_source"] == "recorded" and len(run.arrival_s) == 15
    assert not list((tmp_path / "runs").glob(".*"))  # no temporary folder left behind


def test_engine_cpus_needs_a_server_started_here(capsys, tmp_path):
    cli_error(capsys, ["traces", "record-serving", "--endpoint", "http://127.0.0.1:9/v1", "--rates", "1",
                       "--engine-cpus", "0", "--out", str(tmp_path / "o")], "--engine-cpus")
    assert not (tmp_path / "o").exists()


def test_pin_engine_cpus_keeps_the_caller_off_the_engine_cores(tmp_path):
    """Run in a child process: pinning changes the affinity of the process that calls it."""
    import os
    import subprocess
    import sys

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    cpus = sorted(os.sched_getaffinity(0))
    code = ("import os, sys; from sim.foundation.errors import UserError\n"
            "from traces.collect.vllm_server import pin_engine_cpus\n"
            f"rest = pin_engine_cpus([{cpus[0]}])\n"
            "assert sorted(os.sched_getaffinity(0)) == rest, rest\n"
            f"assert {cpus[0]} not in rest and rest\n"
            "try:\n"
            f"    pin_engine_cpus({cpus})\n"
            "except UserError as e:\n"
            "    print('refused', e.field)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    assert "refused --engine-cpus" in out.stdout


def test_bind_engine_processes_moves_the_servers_children_not_the_server(tmp_path):
    """The real /proc walk and sched_setaffinity on a real process tree (a parent that starts a
    grandchild), standing in for the API server and its engine processes."""
    import os
    import subprocess
    import sys
    import time

    from traces.collect.vllm_server import VllmServer

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    engine = sorted(os.sched_getaffinity(0))[:1]
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(c.pid, flush=True); time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        srv = object.__new__(VllmServer)  # only the fields bind_engine_processes reads
        srv.proc, srv.engine_cpus = parent, engine
        deadline = time.monotonic() + 30
        while srv.bind_engine_processes() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        tasks = [int(t) for t in os.listdir(f"/proc/{child}/task")]
        assert all(os.sched_getaffinity(t) == set(engine) for t in tasks)
        assert os.sched_getaffinity(parent.pid) == os.sched_getaffinity(0)
        assert srv.bind_engine_processes() == 0  # already bound: nothing moves
    finally:
        parent.kill()
        parent.wait()
        if child is not None:
            try:
                os.kill(child, 9)
            except ProcessLookupError:
                pass
