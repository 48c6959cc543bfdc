"""report.html: written by run and sweep, same bytes twice, and checked in a real headless
Chromium (no console errors, no network, every figure holds data)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from chromium import check_page, find_chromium
from sim.cli import main
from sim.report import time_series
from sim.runner import simulate
from sim.sweep import sweep

RUN_FIGURES = {"fig-pareto", "fig-accuracy-budget", "fig-latency-cdf", "fig-over-time",
               "fig-by-dataset"}
SWEEP_FIGURES = {"fig-pareto", "fig-accuracy-budget", "fig-latency-cdf", "fig-by-dataset"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    assert main(["run", "--out", str(tmp / "run"), "--queries", "300"]) == 0
    spec = tmp / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "default", "grid": {"budget": [150, 300, 600]},
                                    "policies": ["uniform", "clear-windowed"], "seeds": [0, 1],
                                    "set": {"arrivals.queries": 150}}))
    sweep(spec, out=tmp / "sweep", progress=False)
    return {"run": tmp / "run", "sweep": tmp / "sweep"}


def test_run_and_sweep_write_a_self_contained_report_that_is_the_same_bytes_twice(folders, capsys):
    for kind, folder in folders.items():
        page = (folder / "report.html").read_text()
        assert "Plotly" in page and "<script src=" not in page  # plotly.js embedded, no CDN
        first = (folder / "report.html").read_bytes()
        assert main(["report", str(folder)]) == 0
        assert (folder / "report.html").read_bytes() == first, kind
    # A run folder with the engine's timeseries.parquet plots its KV cache use, not an estimate.
    if (folders["run"] / "timeseries.parquet").is_file():
        assert "KV cache use" in (folders["run"] / "report.html").read_text()
    capsys.readouterr()
    assert main(["report", str(folders["run"].parent)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0]


def test_queue_length_over_time_matches_a_direct_count():
    q = simulate("default", queries=1000, policies="uniform,clear-windowed").queries
    series = time_series(q, ["uniform", "clear-windowed"], points=50)
    for p in ("uniform", "clear-windowed"):
        g = q[q["policy"] == p]
        t, n = series["queue length"][p]
        leave = np.where(g["abandoned"], g["decision_s"], g["scheduled_s"])
        direct = [(np.sum(g["arrival_s"].to_numpy() <= x) - np.sum(leave <= x)) for x in t]
        assert list(n) == direct
        assert n[-1] == 0  # everyone has left the queue by the end
    assert "uniform" not in series["shadow price"]  # uniform prices nothing
    assert len(series["shadow price"]["clear-windowed"][0]) > 1


@pytest.mark.parametrize("kind,expected", [("run", RUN_FIGURES), ("sweep", SWEEP_FIGURES)])
def test_report_in_headless_chromium(folders, tmp_path, kind, expected):
    if find_chromium() is None:
        if os.environ.get("CLEARSIM_REQUIRE_BROWSER"):
            pytest.fail("CLEARSIM_REQUIRE_BROWSER is set but no chromium is on PATH")
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    result = check_page(folders[kind] / "report.html")
    assert result["errors"] == []
    assert result["remote_requests"] == []  # works offline
    figures = {f["id"]: f for f in result["figures"]}
    assert set(figures) == expected
    for fid, f in figures.items():
        assert f["drawn"] > 0, fid
        assert f["traces"] > 0 and f["points"] > 0 and f["empty_traces"] == 0, (fid, f)
    page = (folders[kind] / "report.html").read_text()
    assert "<h2>Summary</h2><table>" in page.replace("\n", "")
