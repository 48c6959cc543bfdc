"""The maintainers' rebuild scripts (``python -m sim.core.arrival_data``, ``python -m
traces.embed``) treat bad input as every clearsim command does: one line naming the file or
option, exit 2, no traceback, and nothing written; ``--help`` documents them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from sim.core import arrival_data
from sim.core.arrival_data import SOURCES
from traces import embed


def _one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"{prog}: error: ")
    return err


@pytest.mark.parametrize("module", ["sim.core.arrival_data", "traces.embed"])
def test_help_is_usage_not_a_traceback(module):
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: python -m {module}") and not res.stderr


def test_arrival_data_without_arguments_is_a_usage_line(capsys):
    with pytest.raises(SystemExit) as exc:
        arrival_data.main([])
    assert exc.value.code == 2
    assert "arrivals_dir" in _one_error_line(capsys, "python -m sim.core.arrival_data")


def test_arrival_data_missing_folder(tmp_path, capsys):
    assert arrival_data.main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "not a folder" in _one_error_line(capsys, "python -m sim.core.arrival_data")
    assert not (tmp_path / "out").exists()


def test_arrival_data_checks_every_source_before_writing(shared_data, tmp_path, capsys):
    """Two of the three sources present: refused up front, the output folder's old files kept."""
    src = tmp_path / "src"
    src.mkdir()
    names = [fname for fname, _ in SOURCES.values()]
    for fname in names[:-1]:
        shutil.copy(shared_data / "arrivals" / fname, src / fname)
    out = tmp_path / "out"
    out.mkdir()
    (out / "azure-conv.parquet").write_bytes(b"old")
    assert arrival_data.main([str(src), str(out)]) == 2
    err = _one_error_line(capsys, "python -m sim.core.arrival_data")
    assert names[-1] in err
    assert sorted(p.name for p in out.iterdir()) == ["azure-conv.parquet"]
    assert (out / "azure-conv.parquet").read_bytes() == b"old"


def test_arrival_data_broken_source_is_named(shared_data, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for fname, _ in SOURCES.values():
        shutil.copy(shared_data / "arrivals" / fname, src / fname)
    broken = [fname for fname, _ in SOURCES.values()][-1]
    (src / broken).write_text('{"no_timestamp": 1}\n')
    out = tmp_path / "out"
    assert arrival_data.main([str(src), str(out)]) == 2
    err = _one_error_line(capsys, "python -m sim.core.arrival_data")
    assert broken in err and "KeyError" in err
    assert not out.exists() or not any(out.iterdir())


def test_embed_unknown_only_name_is_refused(tmp_path, capsys):
    """A misspelt --only used to rebuild nothing and report success."""
    assert embed.main([str(tmp_path), "--only", "gpt-4_gsm8k_t0.7_k6,not-a-set",
                       "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = _one_error_line(capsys, "python -m traces.embed")
    assert "--only" in err and "not-a-set" in err and "gpt-4_gsm8k_t0.7_k6" in err
    assert not (tmp_path / "out").exists()


def test_embed_missing_sources_refused_before_writing(tmp_path, capsys):
    gen = tmp_path / "generations"
    gen.mkdir()
    assert embed.main([str(gen), "--only", "gpt-4_gsm8k_t0.7_k6", "--out", str(tmp_path / "out"),
                       "--no-progress"]) == 2
    assert "gpt-4_gsm8k_t0.7_k6.jsonl" in _one_error_line(capsys, "python -m traces.embed")
    assert not (tmp_path / "out").exists()
    assert embed.main([str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "not a folder" in _one_error_line(capsys, "python -m traces.embed")


def test_embed_one_set_rebuilds_the_shipped_file(shared_data, tmp_path, capsys):
    assert embed.main([str(shared_data / "generations"), "--only", "gpt-4_gsm8k_t0.7_k6",
                       "--out", str(tmp_path), "--no-progress"]) == 0
    from traces.registry import embedded_dir
    name = "gpt-4_gsm8k_t0.7_k6.parquet"
    assert (tmp_path / name).read_bytes() == (embedded_dir() / name).read_bytes()
