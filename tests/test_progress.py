"""Progress (sim/foundation/progress.py): periodic lines off a terminal, a tqdm bar on one, warnings that
never land inside the bar, on sweeps, plans and from worker processes."""

from __future__ import annotations

import io
import logging
import math
import re
import warnings

import pytest
import yaml

import sim.experiments.sweep
from sim.experiments.cli import main
from sim.foundation.progress import ProgressOptions, progress_bar
from sim.experiments.sweep import sweep

LINE = re.compile(r"^sweep p: (\d+)/(\d+) tasks \((\d+)%\)(, [\d.]+ tasks/s)?, elapsed "
                  r"\d\d:\d\d(, ETA (\d\d:\d\d|\?))?$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def small_sweep(tmp_path, name="p"):
    """2 budgets x 2 seeds x 1 policy = 4 tasks of 150 queries (well under a second each)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"base": "default", "grid": {"budget": [200, 800]},
                                    "policies": ["uniform"], "seeds": [0, 1],
                                    "set": {"arrivals.queries": 150}}))
    return path


def fake_clock(bar, times):
    """Drive ``bar``'s clock by hand: ``times[0]`` is now, in seconds after the bar started."""
    bar.start_t = bar.last_print_t = bar._last_t = 0.0
    bar._time = lambda: times[0]


def test_lines_come_every_interval_with_rate_and_eta():
    out = io.StringIO()
    now = [0.0]
    with progress_bar(10, desc="work", noun="task",
                      progress=ProgressOptions(stream=out, interval_s=10, step=1.0)) as bar:
        fake_clock(bar, now)
        for _ in range(10):
            now[0] += 3.0  # one task every 3 s: a line at 12, 24 s (every 10 s) and at the end
            bar.update(1)
    lines = out.getvalue().splitlines()
    # 4 done after 12 s: 1/3 task per second, 6 left -> 18 s.
    assert lines == ["work: 0/10 tasks (0%), elapsed 00:00, ETA ?",
                     "work: 4/10 tasks (40%), 0.333 tasks/s, elapsed 00:12, ETA 00:18",
                     "work: 8/10 tasks (80%), 0.333 tasks/s, elapsed 00:24, ETA 00:06",
                     "work: 10/10 tasks (100%), 0.333 tasks/s, elapsed 00:30"]
    assert "\r" not in out.getvalue()


def test_lines_come_every_step_of_the_total_when_that_is_sooner():
    out = io.StringIO()
    now = [0.0]
    with progress_bar(20, done=4, noun="run",
                      progress=ProgressOptions(stream=out, interval_s=math.inf, step=0.25)) as bar:
        fake_clock(bar, now)
        for _ in range(16):
            now[0] += 1.0
            bar.update(1)
    counts = [int(line.split("/")[0]) for line in out.getvalue().splitlines()]
    assert counts == [4, 9, 14, 19, 20]  # every 5 (25% of 20), from the 4 already done
    # The rate counts only what ran now (a resumed sweep's ETA is not flattered by old work).
    assert "9/20 runs (45%), 1 runs/s, elapsed 00:05, ETA 00:11" in out.getvalue()


def test_progress_false_prints_nothing_and_leaves_warnings_alone(capsys):
    before = warnings.showwarning
    with progress_bar(3, progress=False) as bar:
        assert warnings.showwarning is before
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_a_sweep_off_a_terminal_prints_periodic_lines_with_done_total_and_eta(tmp_path):
    out = io.StringIO()
    sweep(small_sweep(tmp_path), out=tmp_path / "out", report=False,
          progress=ProgressOptions(stream=out, interval_s=0))
    lines = out.getvalue().splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert [int(LINE.match(x).group(1)) for x in lines] == [0, 1, 2, 3, 4]
    assert all(LINE.match(x).group(6) for x in lines[1:-1])  # an ETA while work remains
    assert lines[-1].startswith("sweep p: 4/4 tasks (100%)")


def test_the_cli_shows_lines_in_a_log_and_nothing_with_no_progress(tmp_path, capsys):
    spec = small_sweep(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "a"), "--no-report"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("sweep p: 0/4 tasks") and err[-1].startswith("sweep p: 4/4 tasks")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "b"), "--no-report",
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_help_documents_progress_and_the_worker_wait(capsys):
    for cmd in ("sweep", "plan"):
        assert main([cmd, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--progress, --no-progress" in text and "every 10 s or 10% of the" in text
    assert main(["sweep", "--help"]) == 0
    assert "--worker-timeout SECONDS" in capsys.readouterr().out


class CellWarning(UserWarning):
    pass


def warning_task(task):
    """run_task, warning first (the same text every cell: shown once per sweep)."""
    warnings.warn("cell warning: queue nearly full", CellWarning, stacklevel=1)
    logging.getLogger("distributed.progress-test").warning("dask-like log line, task %d %d",
                                                           task.cell, task.seed)
    if task.cell == 1:
        warnings.warn(f"cell warning: only in cell {task.cell} seed {task.seed}", CellWarning,
                      stacklevel=1)
    return REAL_RUN_TASK(task)


REAL_RUN_TASK = sim.experiments.sweep.run_task


def test_a_warning_in_a_cell_never_lands_inside_the_bar(tmp_path, monkeypatch):
    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)  # where Python prints warnings, and the bar
    monkeypatch.setattr(sim.experiments.sweep, "run_task", warning_task)
    # A console log handler like the ones Dask's `distributed` loggers have.
    log = logging.getLogger("distributed.progress-test")
    handler = logging.StreamHandler(term)
    monkeypatch.setattr(log, "handlers", [handler])
    monkeypatch.setattr(log, "propagate", False)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        sweep(small_sweep(tmp_path), out=tmp_path / "out", report=False)
    assert log.handlers == [handler]  # restored after the bar
    text = term.getvalue()
    logged = [m.start() for m in re.finditer("dask-like log line", text)]
    assert len(logged) == 4, text  # one per task
    for at in logged:
        assert text[:at].endswith(("\r", "\n")), repr(text[max(0, at - 80):at])
    assert "4/4" in text and "100%" in text  # tqdm's bar, drawn with carriage returns
    shown = [m.start() for m in re.finditer(r"\S+: CellWarning: ", text)]
    # One line per distinct warning: the common one once, one per seed from cell 1.
    assert len(shown) == 3, text
    for at in shown:
        before = text[:at]
        # The bar was wiped first (tqdm.write: "\r<spaces>\r"), and the warning's line ends.
        assert before == "" or before.endswith(("\r", "\n")), repr(text[max(0, at - 80):at])
        assert text[at:].split("\n")[0].count("\r") == 0


def test_warnings_from_worker_processes_come_back_and_are_shown_once(tmp_path, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sim.experiments.sweep, "run_task", warning_task)  # forked workers inherit it
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        sweep(small_sweep(tmp_path), out=tmp_path / "out", report=False, executor="processes:2",
              progress=ProgressOptions(stream=out, interval_s=math.inf))
    text = out.getvalue()
    assert text.count("CellWarning: cell warning: queue nearly full") == 1, text
    assert text.count("CellWarning: cell warning: only in cell 1") == 2, text
    lines = text.splitlines()
    assert lines[0].startswith("sweep p: 0/4") and lines[-1].startswith("sweep p: 4/4")


# ---------------------------------------------------------------------------------------------
# Plans: the bisection's upper bound as the total.

def test_max_points_bounds_every_bisection():
    """The total shown for a plan never falls short of the runs its search makes."""
    import numpy as np

    from sim.experiments.plan import Point, _search, max_points

    rng = np.random.default_rng(7)
    for _ in range(400):
        over = "replicas" if rng.random() < 0.5 else "rate"
        lo = int(rng.integers(1, 20)) if over == "replicas" else float(rng.uniform(0.5, 50))
        hi = lo + (int(rng.integers(0, 300)) if over == "replicas" else float(rng.uniform(0, 900)))
        search = {"over": over, "min": lo, "max": hi, "tolerance": float(rng.uniform(0.001, 0.2))}
        limit = rng.uniform(lo - 1, hi + 1)
        seen = set()

        def evaluate(v):
            seen.add(v)
            ok = v >= limit if over == "replicas" else v <= limit
            return Point(int(v), float(v), 1.0, 1.0, 1.0, 1.0, ok, True)

        _search("p", evaluate, search)
        assert len(seen) <= max_points(search), (search, limit, len(seen))
    # and it is tight for a full replicas bisection: 1..64 probes 64, 1, then 6 halvings
    assert max_points({"over": "replicas", "min": 1, "max": 64, "tolerance": 0.02}) == 2 + 6


def test_a_plan_shows_progress_in_runs(tmp_path):
    from sim.experiments.plan import plan

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "base": "default", "budget": 200, "policies": ["uniform"],
        "set": {"arrivals.rate": 200, "arrivals.queries": 300},
        "search": {"over": "replicas", "min": 1, "max": 8},
        "slo": {"p99_e2e_s": 3.0}, "seeds": [0]}))
    out = io.StringIO()
    res = plan(str(path), progress=ProgressOptions(stream=out, interval_s=0))
    lines = out.getvalue().splitlines()
    assert lines[0] == "plan p: 0/5 runs (0%), elapsed 00:00, ETA ?"  # 2 ends + 3 halvings of 7
    runs = res.rows[0].runs
    assert lines[-1].startswith(f"plan p: {runs}/{runs} runs (100%)")  # lowered to what ran
    assert len(lines) == runs + 1 + (runs < 5)  # one per run, and the lowered total's own
