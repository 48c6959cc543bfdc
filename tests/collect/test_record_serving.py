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
    from sim.calibrate import load_run
    from sim.cli import main

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
