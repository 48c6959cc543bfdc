"""Killed commands leave nothing behind; a saved scenario reruns from any folder.

Issue 13: killing a ``processes`` sweep left its workers running, a killed ``clearsim run``
left a hidden folder under ``runs/``, and ``clearsim run runs/<x>/scenario.yaml`` failed from
another folder when the scenario used relative trace paths.

The kills are deterministic: a real ``clearsim`` subprocess is stopped at a known point (a run
patched to report and block while its folder is being written; a sweep once its workers exist),
and every wait is a poll with a timeout, never a sleep tuned to the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from helpers import make_traces  # noqa: E402

WAIT_S = 60  # upper bound of every poll (interpreter start-up on a loaded 2-core machine)
SMALL = {"name": "small", "seed": 0, "budget": 250,
         "traces": {"sets": ["qwen25-math-instruct_math100_t0.7_k8"]},
         "arrivals": {"process": "poisson", "rate": 40, "queries": 30}, "policies": ["uniform"]}


def _env(tmp: Path) -> dict:
    return {**os.environ, "CLEARSIM_HOME": str(tmp / ".home"), "PYTHONPATH": str(REPO)}


def _poll(cond, what: str, timeout: float = WAIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


# A run that announces, then blocks, while its folder is half-written (bench.json is written
# after queries.parquet and summary.json, inside the hidden .partial folder).
BLOCKING_RUN = textwrap.dedent("""
    import sys, time
    import sim.experiments.vllm_bench as vb
    def blocked(queries):
        print("WRITING", flush=True)
        time.sleep(600)
    vb.bench_by_policy = blocked
    from sim.experiments.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _start_blocking_run(tmp: Path, out: Path) -> subprocess.Popen:
    (tmp / "s.yaml").write_text(yaml.safe_dump(SMALL))
    proc = subprocess.Popen([sys.executable, "-c", BLOCKING_RUN, "run", "s.yaml", "--out", str(out),
                             "--no-report"], cwd=tmp, env=_env(tmp), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # returns at "WRITING" or when the process ends
    assert line.strip() == "WRITING", (line, proc.poll(), proc.stderr.read() if proc.poll() else "")
    return proc


def _partials(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.partial"))


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and signals as on Linux")
def test_sigterm_while_writing_a_run_leaves_no_partial_folder(tmp_path):
    out = tmp_path / "runs" / "r1"
    proc = _start_blocking_run(tmp_path, out)
    assert len(_partials(out.parent)) == 1  # really mid-write
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=WAIT_S)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()
    assert _partials(out.parent) == [] and not out.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and signals as on Linux")
def test_sigkilled_run_leaves_a_partial_that_the_next_run_removes(tmp_path):
    from sim.experiments.outdirs import STALE_S

    out = tmp_path / "runs" / "r1"
    proc = _start_blocking_run(tmp_path, out)
    proc.kill()
    proc.wait(timeout=WAIT_S)
    (left,) = _partials(out.parent)  # SIGKILL cannot be caught: it stays ...
    assert not out.exists()
    old = time.time() - STALE_S - 60
    os.utime(left, (old, old))
    env = _env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "sim", "run", "s.yaml", "--out",
                           str(out.parent / "r2"), "--no-report"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WAIT_S * 2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _partials(out.parent) == []  # ... until the next run into the same folder
    assert (out.parent / "r2" / "queries.parquet").is_file()


SLOW_SWEEP = {"base": "s.yaml", "grid": {"budget": [200, 300, 400, 500]}, "seeds": [0],
              "set": {"arrivals.queries": 200_000, "arrivals.rate": 2000}}


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_processes_sweep_leaves_no_workers(tmp_path, sig):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SMALL))
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(SLOW_SWEEP))
    proc = subprocess.Popen([sys.executable, "-m", "sim", "sweep", "sw.yaml", "--executor",
                             "processes:2", "--out", str(tmp_path / "out"), "--no-report"],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        workers = _poll(lambda: (d := _descendants(proc.pid)) and len(d) >= 2 and d,
                        "the sweep's two workers")
        assert proc.poll() is None  # a task of 200,000 queries takes ~30 s: the workers are busy
        os.kill(proc.pid, sig)
        proc.wait(timeout=WAIT_S)
        # far sooner than their task would end (without PR_SET_PDEATHSIG they run it out)
        _poll(lambda: not any(_alive(w) for w in workers), "the workers to end", timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers | _descendants(proc.pid):  # a failed test leaves nothing running
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_saved_scenario_reruns_identically_from_another_folder(tmp_path, monkeypatch, capsys):
    """Relative trace-set and arrival-trace paths: the saved scenario.yaml holds them absolute,
    so a rerun from elsewhere reads the same files and writes the same bytes."""
    from sim.experiments.cli import main

    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    make_traces([[(100 + 20 * i, i % 2 == 0), (300, True)] for i in range(12)]).write(
        proj / "data" / "t.parquet")
    (proj / "data" / "a.jsonl").write_text("".join(
        f'{{"timestamp": {250 * i}, "input_length": {40 + i}}}\n' for i in range(20)))
    sc = {**SMALL, "traces": {"sets": ["data/t.parquet"]},
          "arrivals": {"process": "replay", "trace": "a.jsonl", "queries": 20}}
    (proj / "data" / "s.yaml").write_text(yaml.safe_dump(sc))
    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / ".home"))
    monkeypatch.chdir(proj)  # data/t.parquet from here, a.jsonl beside the scenario
    assert main(["run", "data/s.yaml", "--out", "runs/first", "--no-report"]) == 0, \
        capsys.readouterr().err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", str(Path("..") / "proj" / "runs" / "first" / "scenario.yaml"), "--out",
                 "second", "--no-report"]) == 0, capsys.readouterr().err
    first, second = proj / "runs" / "first", elsewhere / "second"
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert {"queries.parquet", "summary.json", "scenario.yaml"} <= set(names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    saved = yaml.safe_load((first / "scenario.yaml").read_text())
    assert Path(saved["traces"]["sets"][0]).is_absolute()
    assert Path(saved["arrivals"]["trace"]).is_absolute()
