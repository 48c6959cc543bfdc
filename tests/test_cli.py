"""The command line: the main job, help texts, and every bad input as one line with exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli_error
import yaml

from sim.experiments.cli import main
from sim.experiments.scenario import scenarios_dir

DEFAULT = yaml.safe_load((scenarios_dir() / "default.yaml").read_text())


def scenario_file(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(yaml.safe_dump(DEFAULT))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


DELETE = object()


def test_run_prints_the_table_and_writes_the_folder(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), "--queries", "150"]) == 0
    out = capsys.readouterr().out
    for word in ("policy", "accuracy", "tokens/q", "abandon", "e2e p50", "e2e p99", "wait p99",
                 "uniform", "clear-windowed"):
        assert word in out
    assert (tmp_path / "r" / "summary.json").is_file()


@pytest.mark.parametrize("case,changes,expected", [
    ("unknown field", {"arrivals__rat": 3}, ["field 'arrivals.rat'", "did you mean 'rate'"]),
    ("unknown top field", {"budgett": 3}, ["field 'budgett'", "did you mean 'budget'"]),
    ("wrong type", {"arrivals__queries": "many"}, ["field 'arrivals.queries'", "integer"]),
    ("negative rate", {"arrivals__rate": -2}, ["field 'arrivals.rate'", "must be > 0"]),
    ("negative budget", {"budget": -100}, ["field 'budget'", "must be > 0"]),
    ("missing budget", {"budget": DELETE}, ["field 'budget'", "missing"]),
    ("unknown policy", {"policies": ["uniform", "clearr"]},
     ["field 'policies[1].name'", "unknown policy 'clearr'", "did you mean 'clear'"]),
    ("bad policy param", {"policies": [{"name": "clear-windowed", "window": 5}]},
     ["field 'policies[0].window'", "did you mean 'window_s'"]),
    ("missing trace", {"traces__sets": ["no-such-set"]},
     ["field 'traces.sets'", "unknown trace set 'no-such-set'", "clearsim traces list"]),
    ("missing trace file", {"traces__sets": ["/nowhere/t.parquet"]},
     ["field 'traces.sets'", "/nowhere/t.parquet not found"]),
    ("unknown dataset in mix", {"traces__mix": {"mathh": 1}}, ["field 'traces.mix.mathh'", "available"]),
    ("unknown preset", {"engine__preset": "h100"}, ["field 'engine.preset'", "one of"]),
])
def test_bad_scenarios_fail_in_one_line_with_no_output(tmp_path, capsys, case, changes, expected):
    path = scenario_file(tmp_path, **changes)
    out = tmp_path / "out"
    cli_error(capsys, ["run", str(path), "--out", str(out)], str(path), *expected)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("argv,expected", [
    (["run", "--budget", "-5"], ["--budget", "must be > 0"]),
    (["run", "--rate", "0"], ["--rate", "must be > 0"]),
    (["run", "--queries", "ten"], ["--queries", "not an integer"]),
    (["run", "nosuch"], ["unknown scenario 'nosuch'"]),
    (["run", "--policies", "uniform,greedy"], ["unknown policy 'greedy'"]),
    (["frobnicate"], ["invalid choice"]),
])
def test_bad_command_lines(capsys, argv, expected, tmp_path):
    cli_error(capsys, argv + ["--out", str(tmp_path / "o")] if argv[0] == "run" else argv, *expected)
    assert not (tmp_path / "o").exists()


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("budget: 100\narrivals: [rate: 3\n")
    cli_error(capsys, ["run", str(path)], f"{path}:", "not valid YAML")


def test_existing_output_folder_is_left_alone(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    cli_error(capsys, ["run", "--out", str(out), "--queries", "20"], "not empty")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_validate_and_scenarios_commands(capsys, tmp_path):
    assert main(["validate", "default"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["scenarios", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "arrivals.rate" in out and "policies[clear-windowed].window_s" in out
    cli_error(capsys, ["validate", str(scenario_file(tmp_path, seed=-1))], "field 'seed'", ">= 0")


def test_traces_list_shows_every_embedded_set(capsys):
    assert main(["traces", "list"]) == 0
    out = capsys.readouterr().out
    assert out.count("[embedded]") >= 8 and "PRIME-RL/PRIME" in out


def test_help_documents_every_run_option_and_field():
    proc = subprocess.run([sys.executable, "-m", "sim", "run", "--help"], capture_output=True,
                          text=True, check=True)
    for opt in ("--out", "--seed", "--policies", "--budget", "--rate", "--queries",
                "engine.max_num_seqs", "predictor.sigma", "policies[clear].batch"):
        assert opt in proc.stdout
    # a usage error from the real entry point: one line, exit 2
    proc = subprocess.run([sys.executable, "-m", "sim", "run", "--budget", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", __import__("sim.experiments.scenario", fromlist=["x"]).shipped_scenarios())
def test_every_shipped_scenario_validates_and_runs(name, capsys, tmp_path):
    """Shipped scenarios must keep working as the code evolves (a short run of each)."""
    assert main(["validate", name]) == 0
    assert main(["run", name, "--queries", "150", "--out", str(tmp_path / name), "--no-report"]) == 0
    assert (tmp_path / name / "summary.json").is_file()


@pytest.mark.parametrize("name", sorted(p.stem for p in (scenarios_dir() / "sweeps").glob("*.yaml")))
def test_every_shipped_sweep_resolves(name, capsys):
    assert main(["sweep", name, "--dry-run"]) == 0
    assert ": ok (" in capsys.readouterr().out


def test_validate_checks_what_a_run_would_follow(tmp_path, capsys):
    """Cross-field problems found only when workload is drawn are caught by validate too."""
    path = scenario_file(tmp_path, traces__stream="balanced", traces__pools={"easy": 1})
    cli_error(capsys, ["validate", str(path)], str(path), "field 'traces.pools'", "not both")
    path = scenario_file(tmp_path, arrivals={"process": "replay", "trace": "nope.csv",
                                             "queries": 10})
    cli_error(capsys, ["validate", str(path)], "field 'arrivals.trace'", "not found")
