"""report.html: written by run and sweep, same bytes twice; figures readable (every axis titled
with its unit, no empty traces, no text labels, a log axis for a geometric grid, latency vs
budget at every cell, TTFT/TPOT in the tables), checked on the plotly figures and in a real
headless Chromium at 1400 px (no console errors, no network, no overlapping text)."""

from __future__ import annotations

import html
import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from chromium import WIDTH, check_page, find_chromium
from sim.experiments.cli import main
from sim.experiments.report import is_geometric, run_figures, sweep_figures, time_series
from sim.experiments.runner import simulate
from sim.experiments.sweep import sweep

RUN_FIGURES = {"fig-pareto", "fig-accuracy-budget", "fig-latency-cdf", "fig-over-time",
               "fig-by-dataset"}
SWEEP_FIGURES = {"fig-pareto", "fig-accuracy-budget", "fig-latency-budget", "fig-latency-cdf",
                 "fig-by-dataset"}
GRID = [100, 400, 1600]  # geometric, 16x: drawn on a log axis
LOG_FIGURES = {"fig-pareto", "fig-accuracy-budget", "fig-latency-budget"}
UNIT = re.compile(r"\S \(.+\)$")  # "budget (tokens/query)"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    assert main(["run", "--out", str(tmp / "run"), "--queries", "300"]) == 0
    spec = tmp / "s.yaml"
    spec.write_text(yaml.safe_dump({"base": "default", "grid": {"budget": GRID},
                                    "policies": ["uniform", "clear-windowed"], "seeds": [0, 1],
                                    "set": {"arrivals.queries": 150}}))
    sweep(spec, out=tmp / "sweep", progress=False)
    return {"run": tmp / "run", "sweep": tmp / "sweep"}


def _load(folder):
    if (folder / "results.parquet").is_file():
        return (pd.read_parquet(folder / "results.parquet"),
                pd.read_parquet(folder / "aggregate.parquet"),
                json.loads((folder / "sweep.json").read_text()))
    ts = folder / "timeseries.parquet"
    return (pd.read_parquet(folder / "queries.parquet"),
            json.loads((folder / "summary.json").read_text()),
            pd.read_parquet(ts) if ts.is_file() else None)


def _figures(kind, folder):
    table, figs = (run_figures if kind == "run" else sweep_figures)(*_load(folder))
    return table, {f"fig-{i}": fig for i, fig, _ in figs}


def _axes(fig) -> dict:
    layout = fig.to_plotly_json()["layout"]
    return {k: v for k, v in layout.items() if re.fullmatch(r"[xy]axis\d*", k)}


def _axis_of(trace, letter: str) -> str:
    ref = getattr(trace, f"{letter}axis", None) or letter
    return f"{letter}axis{ref[1:]}"


def _finite(v) -> int:
    return int(np.isfinite(np.asarray(v, dtype=float)).sum()) if v is not None else 0


def _panel(fig, trace) -> str:
    """The subplot title of the panel a trace is drawn in (panels stacked or in a grid)."""
    names = [a.text for a in fig.layout.annotations]
    ref = trace.yaxis or "y"
    return names[int(ref[1:] or 1) - 1]


def _rows(table: str) -> tuple[list[str], list[list[str]]]:
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table)]
    rows = [[html.unescape(re.sub(r"<[^>]+>", " ", c)).split()[0] if c else c
             for c in re.findall(r"<td>(.*?)</td>", r)]
            for r in re.findall(r"<tr>(.*?)</tr>", table)[1:]]
    return head, rows


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


@pytest.mark.parametrize("kind,expected", [("run", RUN_FIGURES), ("sweep", SWEEP_FIGURES)])
def test_every_axis_has_a_unit_and_every_trace_data(folders, kind, expected):
    _, figs = _figures(kind, folders[kind])
    assert set(figs) == expected
    for fid, fig in figs.items():
        axes = _axes(fig)
        for t in fig.data:
            for letter in "xy":  # a trace never lands on an axis the layout does not title
                assert _axis_of(t, letter) in axes, (fid, t.name)
            xs = t.x if t.type != "bar" else np.zeros(len(t.y))
            assert _finite(xs) > 0 and _finite(t.y) > 0, (fid, t.name)  # no empty trace
            assert "text" not in (getattr(t, "mode", None) or "") and t.text is None, \
                (fid, t.name)  # legend and hover, not labels on the points
        for name, ax in axes.items():
            title = (ax.get("title") or {}).get("text") or ""
            if ax.get("showticklabels") is False:  # a shared time axis: titled at the bottom
                continue
            assert title, (fid, name)
            if ax.get("type") != "category":
                assert UNIT.search(title), (fid, name, title)


def test_run_figures_keep_every_policy_visible_and_price_panels_honest(folders):
    q, summary, ts = _load(folders["run"])
    policies = [r["policy"] for r in summary["results"]]
    _, figs = _figures("run", folders["run"])
    pareto = figs["fig-pareto"].data
    assert [t.name for t in pareto] == policies
    assert len({t.marker.symbol for t in pareto}) == len(policies)
    # Drawn in order, each marker strictly smaller than the ones under it: none hides another.
    sizes = [t.marker.size for t in pareto]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes

    fig = figs["fig-over-time"]
    prices = [t for t in fig.data if _panel(fig, t) == "shadow price"]
    series = time_series(q, policies)["shadow price"]
    assert "uniform" not in series and not any(t.legendgroup == "uniform" for t in prices)
    assert {t.legendgroup for t in prices} == set(series)
    t_lo = min(np.min(t.x) for t in fig.data)
    t_hi = max(np.max(t.x) for t in fig.data)
    for t in prices:
        x, y = series[t.legendgroup]
        if len(x) == 1:  # whole-batch clear: one price, a line over the run, named as such
            assert "one batch price" in t.name and len(set(t.y)) == 1 and t.y[0] == y[0]
            assert t.x[0] == t_lo and t.x[-1] == t_hi and x[0] in t.x
    assert any(len(x) == 1 for x, _ in series.values())  # the default scenario has one
    # Each panel has its own legend, placed at its top: a policy is listed only where it has data.
    by_legend = {}
    for t in fig.data:
        by_legend.setdefault(t.legend or "legend", set()).add(_panel(fig, t))
    assert all(len(panels) == 1 for panels in by_legend.values()), by_legend


def test_sweep_axes_are_log_on_a_geometric_grid_and_linear_otherwise(folders):
    assert is_geometric([100, 200, 400, 800, 1600]) and is_geometric(GRID)
    assert is_geometric([100, 150, 300, 600, 1200])  # nearly geometric is enough
    assert not is_geometric(range(100, 1700, 100))  # linear, even over 16x
    assert not is_geometric([150, 300, 600])  # 4x: too short to need a log axis
    assert not is_geometric([100, 900, 1700]) and not is_geometric([0, 100, 1600])
    assert not is_geometric([100, 1600])  # two values: no ratio to check
    res, agg, man = _load(folders["sweep"])
    _, figs = _figures("sweep", folders["sweep"])
    for fid in LOG_FIGURES:
        assert {a.get("type") for k, a in _axes(figs[fid]).items() if k[0] == "x"} == {"log"}, fid
    linear = {100: 100, 400: 200, 1600: 300}
    res, agg = res.assign(budget=res["budget"].map(linear)), agg.assign(budget=agg["budget"].map(linear))
    _, figs = sweep_figures(res, agg, man)
    for _, fig, _ in figs:
        assert all(a.get("type") != "log" for a in _axes(fig).values())


def test_latency_figure_shows_every_cell_for_every_policy(folders):
    res, agg, man = _load(folders["sweep"])
    _, figs = _figures("sweep", folders["sweep"])
    fig = figs["fig-latency-budget"]
    panels = {"E2E latency p50": "e2el_ms_median", "E2E latency p99": "e2el_ms_p99",
              "TTFT p50": "ttft_ms_median", "TTFT p99": "ttft_ms_p99"}
    assert [a.text for a in fig.layout.annotations] == list(panels)
    seen = set()
    for t in fig.data:
        if t.mode != "lines+markers":  # the CI bands
            continue
        g = agg[agg["policy"] == t.name].sort_values("budget")
        m = panels[_panel(fig, t)]
        assert list(t.x) == GRID
        assert np.allclose(t.y, g[f"{m}_mean"].to_numpy() / 1000.0)
        seen.add((t.name, m))
    assert seen == {(p, m) for p in man["policies"] for m in panels.values()}
    for ax in (a for k, a in _axes(fig).items() if k[0] == "y"):
        assert ax["title"]["text"].endswith("(s)")


def test_tables_show_ttft_and_tpot(folders):
    table, _ = _figures("run", folders["run"])
    head, rows = _rows(table)
    q, summary, _ = _load(folders["run"])
    for r, row in zip(summary["results"], rows):
        cell = dict(zip(head, row))
        assert cell["policy"] == r["policy"]
        assert cell["TTFT p50 (s)"] == f"{r['ttft_ms']['median'] / 1000:.2f}"
        assert cell["TTFT p99 (s)"] == f"{r['ttft_ms']['p99'] / 1000:.2f}"
        assert cell["TPOT mean (ms)"] == f"{r['tpot_ms']['mean']:.1f}"
        assert cell["TPOT p99 (ms)"] == f"{r['tpot_ms']['p99']:.1f}"
    table, _ = _figures("sweep", folders["sweep"])
    head, rows = _rows(table)
    res, agg, man = _load(folders["sweep"])
    assert len(rows) == len(agg)
    for (_, a), row in zip(agg.iterrows(), rows):
        cell = dict(zip(head, row))
        assert cell["TTFT p99 (s)"] == f"{a['ttft_ms_p99_mean'] / 1000:.2f}"
        assert cell["TPOT mean (ms)"] == f"{a['tpot_ms_mean_mean']:.1f}"
        assert cell["E2E p50 (s)"] == f"{a['e2el_ms_median_mean'] / 1000:.2f}"


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
def test_report_in_headless_chromium(folders, kind, expected):
    if find_chromium() is None:
        if os.environ.get("CLEARSIM_REQUIRE_BROWSER"):
            pytest.fail("CLEARSIM_REQUIRE_BROWSER is set but no chromium is on PATH")
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium)")
    result = check_page(folders[kind] / "report.html")
    assert result["errors"] == []
    assert result["remote_requests"] == []  # works offline
    assert result["page"]["scroll_width"] <= WIDTH  # nothing wider than the window
    figures = {f["id"]: f for f in result["figures"]}
    assert set(figures) == expected
    for fid, f in figures.items():
        assert f["drawn"] > 0, fid
        assert f["traces"] > 0 and f["points"] > 0 and f["empty_traces"] == 0, (fid, f)
        assert f["text_points"] == 0 and f["overlaps"] == [], (fid, f["overlaps"])
        assert f["right"] <= WIDTH, fid
        for ax in f["axes"]:
            if ax["visible"] and ax["ticklabels"]:
                assert ax["title"] and ax["rendered_title"], (fid, ax)
    if kind == "sweep":
        for fid in LOG_FIGURES:
            assert {a["type"] for a in figures[fid]["axes"] if a["name"][0] == "x"} == {"log"}, fid
        lat = figures["fig-latency-budget"]
        assert lat["points"] >= 4 * 2 * len(GRID)  # 4 panels x 2 policies x every cell
    else:
        summary = json.loads((folders[kind] / "summary.json").read_text())
        policies = [r["policy"] for r in summary["results"]]
        assert figures["fig-pareto"]["legend"] == policies
        legend = figures["fig-over-time"]["legend"]  # every panel's legend, top to bottom
        assert "clear (one batch price)" in legend and "uniform" in legend
        prices = legend[:legend.index("uniform")]  # the shadow-price panel's legend comes first
        assert prices and all("(one batch price)" in e or e.startswith("clear") for e in prices)
    page = (folders[kind] / "report.html").read_text()
    assert "<h2>Summary</h2><div class=\"table\"><table>" in page.replace("\n", "")
    assert "TTFT p99 (s)" in page and "TPOT mean (ms)" in page
