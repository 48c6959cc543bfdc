"""A sweep cell that passes every check but fails in the simulation (issue 13).

``engine.kv_blocks: 1`` is a valid field value, but no request of the workload fits in one KV
block: only the engine finds that out, at run time.  The other cells must still run and be
saved, the command must end with one line (exit 2) naming the failing cell, ``failed.json``
must list it, and ``--resume`` must run only the failed task again.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SMALL = {"name": "small", "seed": 0, "budget": 250,
         "traces": {"sets": ["qwen25-math-instruct_math100_t0.7_k8"]},
         "arrivals": {"process": "poisson", "rate": 40, "queries": 20}, "policies": ["uniform"]}


def test_failing_cell_is_reported_and_the_others_kept(tmp_path, monkeypatch, capsys):
    import sim.experiments.sweep as sweep_mod
    from helpers import cli_error
    from sim.foundation.errors import UserError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLEARSIM_HOME", str(tmp_path / ".home"))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SMALL))
    (tmp_path / "sw.yaml").write_text(yaml.safe_dump(
        {"base": "s.yaml", "grid": {"engine.kv_blocks": [100_000, 1, 50_000]}, "seeds": [0]}))
    line = cli_error(capsys, ["sweep", "sw.yaml", "--out", "o", "--no-report", "--no-progress"],
                     "sw.yaml", "1 of 3 tasks failed", "cell 1", "engine.kv_blocks=1", "--resume")
    assert "failed.json" in line
    failed = json.loads((tmp_path / "o" / "failed.json").read_text())
    assert [(f["cell"], f["seed"], f["values"]) for f in failed] == [(1, 0, {"engine.kv_blocks": 1})]
    assert "kv_blocks" in failed[0]["error"]
    cells = sorted(p.name for p in (tmp_path / "o" / "cells").glob("*.parquet"))
    assert [c[:8] for c in cells] == ["c0000-s0", "c0002-s0"]  # both good cells saved
    assert not (tmp_path / "o" / "results.parquet").exists()  # no table missing a cell

    ran = []
    real = sweep_mod.run_task
    monkeypatch.setattr(sweep_mod, "run_task", lambda t: ran.append(t.cell) or real(t))
    with pytest.raises(UserError, match="1 of 1 tasks failed"):
        sweep_mod.sweep("sw.yaml", out="o", resume=True, report=False)
    assert ran == [1]  # only the failed task ran again


def test_task_failure_travels_back_from_a_worker():
    from sim.experiments.sweep import TaskFailure

    f = TaskFailure("cell 1: field 'x': bad")
    assert pickle.loads(pickle.dumps(f)) == f
