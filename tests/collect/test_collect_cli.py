"""``clearsim traces collect``: a thin, complete layer over collect(); the base install stays light."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sim.foundation.errors import UserError
from traces.collect import collect
from traces.collect.cli import OPTIONS, register
from traces.registry import user_dir

REPO = Path(__file__).resolve().parents[2]


def clearsim_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """What the main CLI does: a `traces` group whose subparsers are handed to register()."""
    ap = argparse.ArgumentParser(prog="clearsim")
    groups = ap.add_subparsers(dest="command")
    traces = groups.add_parser("traces")
    collect_parser = register(traces.add_subparsers(dest="traces_command"))
    return ap, collect_parser


def test_every_option_maps_onto_a_collect_argument_and_has_help():
    _, p = clearsim_parser()
    params = set(inspect.signature(collect).parameters) - {"log"}
    assert set(OPTIONS) == params
    dests = {a.dest for a in p._actions if a.dest != "help"}
    assert dests == params
    for action in p._actions:
        assert action.help, f"{action.dest} has no help"


def test_defaults_agree_with_the_python_api():
    ap, _ = clearsim_parser()
    args = ap.parse_args(["traces", "collect", "--problems", "gsm8k", "--model", "m"])
    sig = inspect.signature(collect).parameters
    for key in OPTIONS:
        if key not in ("problems", "model"):
            assert getattr(args, key) == sig[key].default, key


def test_the_issue_command_runs_through_the_cli(fake_vllm, addition, capsys):
    ap, _ = clearsim_parser()
    args = ap.parse_args([
        "traces", "collect", "--model", "Qwen/Qwen2.5-Math-7B-Instruct", "--problems",
        str(addition), "--samples", "16", "--temperature", "0.7", "--top-p", "0.8",
        "--max-tokens", "4096", "--seed", "0", "--name", "qwen-math500", "--grader", "numeric",
        "--max-num-seqs", "256",
    ])
    assert args.func(args) == 0
    out = capsys.readouterr()
    assert "clearsim traces show qwen-math500" in out.out
    assert "[collect] wrote" in out.err
    assert (user_dir() / "qwen-math500.parquet").is_file()
    assert fake_vllm.instances[0].init_kwargs["max_num_seqs"] == 256
    assert {(p.n, p.temperature, p.top_p) for p in fake_vllm.params} == {(16, 0.7, 0.8)}


def test_a_trace_written_elsewhere_is_shown_by_path(fake_vllm, addition, tmp_path, capsys):
    ap, _ = clearsim_parser()
    out = tmp_path / "t.parquet"
    args = ap.parse_args(["traces", "collect", "--model", "m", "--problems", str(addition),
                          "--samples", "2", "--grader", "numeric", "--out", str(out)])
    assert args.func(args) == 0
    assert f"clearsim traces show {out}" in capsys.readouterr().out


def test_bad_input_reaches_the_cli_as_a_user_error(addition):
    ap, _ = clearsim_parser()
    args = ap.parse_args(["traces", "collect", "--model", "m", "--problems", str(addition),
                          "--samples", "0"])
    with pytest.raises(UserError, match="field '--samples'"):
        args.func(args)


def test_problems_option_is_required():
    ap, _ = clearsim_parser()
    with pytest.raises(SystemExit):
        ap.parse_args(["traces", "collect", "--model", "m"])


def test_importing_the_collector_pulls_no_gpu_or_optional_package():
    code = (
        "import sys, traces.collect, traces.collect.cli, traces.collect.collector, "
        "traces.collect.endpoint, traces.collect.vllm_backend, traces.grading, "
        "traces.collect.grading_report, traces.collect.problems;"
        "from traces.collect import collect;"
        "heavy = {'vllm', 'torch', 'math_verify', 'datasets', 'transformers'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_base_dependencies_exclude_the_collect_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    heavy = ("vllm", "torch", "math-verify", "math_verify", "datasets")
    assert not [d for d in project["dependencies"] if d.split(">")[0].split("=")[0].split("[")[0]
                .strip().lower() in heavy]
    extra = project.get("optional-dependencies", {}).get("collect")
    if extra is None:
        pytest.skip("pyproject.toml declares no 'collect' extra yet")
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in extra}
    assert {"vllm", "math-verify", "datasets"} <= names
