"""Early exit from a scenario file, end to end: ``clearsim run`` on a probed trace file records
where queries exited; a scenario asking for early exit on sets without probes fails as bad input
does (one line naming the file and field, exit 2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from helpers import cli_error, make_traces
from probed import probed_traces
from sim.experiments.cli import main


def _scenario(tmp_path, traces_path, policies, **extra):
    sc = {"name": "ee", "budget": 1500, "seed": 3,
          "traces": {"sets": [str(traces_path)], **extra},
          "arrivals": {"rate": 5, "queries": 80},
          "policies": policies}
    path = tmp_path / "ee.yaml"
    path.write_text(yaml.safe_dump(sc))
    return path


def test_run_records_exits(tmp_path, capsys):
    rng = np.random.default_rng(2)
    runs = [[(64 * (n := int(rng.integers(4, 40))) + 30, bool(rng.random() < 0.8),
              np.where(rng.random(n) < 0.7, 7, rng.integers(-1, 3, n)).tolist())
             for _ in range(3)] for _ in range(20)]
    probed_traces(runs, out_tokens=6).write(tmp_path / "probed.parquet")
    sc = _scenario(tmp_path, tmp_path / "probed.parquet",
                   ["uniform", {"name": "early-exit", "k": 3},
                    {"name": "clear+early-exit", "k": 3, "b_max": 4000}])
    assert main(["validate", str(sc)]) == 0
    assert main(["run", str(sc), "--out", str(tmp_path / "out"), "--no-report"]) == 0
    q = pd.read_parquet(tmp_path / "out" / "queries.parquet")
    ee = q[q.policy == "early-exit"]
    assert ee.exited.any() and (ee.exit_position[ee.exited] % 64 == 0).all()
    assert (ee.exit_position[~ee.exited] == -1).all()
    assert (ee.tokens_generated[ee.exited] == ee.exit_position[ee.exited]
            + ee.probe_tokens[ee.exited]).all()
    assert not q[q.policy == "uniform"].exited.any()
    assert (q[q.policy == "uniform"].probe_tokens == 0).all()


def test_early_exit_needs_probes(tmp_path, capsys):
    make_traces([[(300, True)], [(500, False)]]).write(tmp_path / "plain.parquet")
    sc = _scenario(tmp_path, tmp_path / "plain.parquet", ["uniform", {"name": "early-exit"}])
    cli_error(capsys, ["validate", str(sc)], "ee.yaml", "policies[1].name", "no forced-answer probes")
    cli_error(capsys, ["run", str(sc), "--out", str(tmp_path / "o"), "--no-report"],
              "no forced-answer probes")
    assert not (tmp_path / "o").exists()


def test_early_exit_needs_recorded_outcomes(tmp_path, capsys):
    probed_traces([[(700, True, [1, 1, 1])]] * 3).write(tmp_path / "p.parquet")
    sc = _scenario(tmp_path, tmp_path / "p.parquet", [{"name": "early-exit"}], outcomes="fitted")
    cli_error(capsys, ["validate", str(sc)], "traces.outcomes", "empirical")
