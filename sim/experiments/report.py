"""The interactive report: one self-contained ``report.html`` for a run folder or a sweep folder.

Plotly.js is embedded in the page (no network, works from a file or an e-mail attachment), and
every figure is only drawn when it has data, so a report never shows an empty chart.

* A **run** (``queries.parquet`` + ``summary.json``): summary table (accuracy, tokens, E2E,
  TTFT, TPOT, GPU); tokens per query vs accuracy per policy with 95% intervals over queries;
  accuracy by allocated budget; E2E latency CDFs; shadow price, queue length and KV use over
  time (one legend per panel, so a policy appears only where it has data); mean budget by dataset.
* A **sweep** (``results.parquet`` + ``aggregate.parquet``): summary table with 95% intervals
  over seeds; the Pareto frontier of tokens per query vs accuracy per policy with its CI band;
  accuracy vs budget (or the first numeric grid axis) with CI bands; E2E (p50, p99) and TTFT
  (p50, p99) latency vs budget over every cell; E2E latency CDFs and budget by dataset at the
  grid's middle cell.

Readable at 1400 px and on paper: no text labels on points (legend and hover instead); each
policy has its own colour, marker symbol and line dash, and markers shrink in drawing order so
two policies on the same point both stay visible; every axis says its unit; a geometric grid
(100, 200, ..., 1600) gets a log axis; a trace is only added when it has data.

The page is a pure function of the folder's files (fixed div ids, sorted inputs): the same
folder gives the same bytes.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sim.foundation.errors import UserError
from sim.foundation.files import write_text_atomic
from sim.experiments.folders import check_out_file, read_run_folder, read_sweep_folder

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
SYMBOLS = ["circle", "diamond", "square", "triangle-up", "x", "star", "cross", "triangle-down",
           "pentagon", "hexagon"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
Z95 = 1.959963984540054
MAX_POINTS = 600  # per curve: keeps the page light without changing what a reader sees

# Axis titles of the grid axes a sweep can have on x (others: the key, with a unit from its suffix).
AXIS_TITLES = {"budget": "budget (tokens/query)", "arrivals.rate": "arrival rate (queries/s)",
               "arrivals.queries": "arriving queries (count)",
               "engine.replicas": "GPU replicas (count)"}
SUFFIX_UNITS = (("_ms", "ms"), ("_s", "s"), ("_tokens", "tokens"), ("_tps", "tokens/s"))
ACCURACY = "expected accuracy (fraction correct)"
TOKENS = "generated tokens per query (tokens/query)"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1300px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
p.meta{color:#555;margin-top:0} div.table{overflow-x:auto} table{border-collapse:collapse;font-size:.86em}
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6} td{white-space:nowrap} td small{color:#777}
td:first-child,th:first-child{text-align:left} .note{color:#666;font-size:.88em}
@media print{body{max-width:none;margin:0} h2{break-after:avoid}
.js-plotly-plot,table{break-inside:avoid} .modebar{display:none}}
"""


class Raw(str):
    """A table cell that is already HTML (a mean with its interval on a second line)."""


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _thin(x: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    """Evenly spaced indices (ends included) so a long curve keeps its shape in few points."""
    if len(x) <= n:
        return np.arange(len(x))
    return np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))


def _style(i: int) -> dict:
    """Policy i's look: colour, marker symbol, line dash, and a marker size that shrinks with i.

    Markers are outlines (an outline never covers another) and traces are drawn in policy order
    with shrinking markers and lines, so a later marker sits inside an earlier one: two policies
    on the same point both stay visible, no text label needed.
    """
    return {"color": COLORS[i % len(COLORS)], "symbol": SYMBOLS[i % len(SYMBOLS)] + "-open",
            "dash": DASHES[i % len(DASHES)], "size": max(8, 20 - 4 * i),
            "width": max(1.5, 4.5 - 1.25 * i)}


def _marker(st: dict, size: float | None = None) -> dict:
    return dict(color=st["color"], symbol=st["symbol"], size=size or st["size"],
                line=dict(width=2.5, color=st["color"]))


def _line(st: dict, **kw) -> dict:
    """Policy lines narrow in drawing order too: one lying on another leaves it a visible rim."""
    return dict(color=st["color"], dash=st["dash"], width=st["width"], **kw)


def axis_title(key: str) -> str:
    """The axis title of a grid axis, with its unit: ``budget`` -> ``budget (tokens/query)``."""
    if key in AXIS_TITLES:
        return AXIS_TITLES[key]
    leaf = key.rsplit(".", 1)[-1]
    for suffix, unit in SUFFIX_UNITS:
        if leaf.endswith(suffix):
            return f"{key} ({unit})"
    return f"{key} (grid value)"


def is_geometric(values) -> bool:
    """Whether a grid is geometric (a log axis shows it evenly): at least 3 positive values,
    spanning at least 8x, whose consecutive ratios are roughly constant (the spread of the
    log-ratios at most half their mean; 100, 200, 400, 800 is, 100, 200, ..., 800 is not)."""
    v = np.unique(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if len(v) < 3 or v[0] <= 0 or v[-1] / v[0] < 8:
        return False
    lr = np.diff(np.log(v))
    return bool(lr.max() - lr.min() <= 0.5 * lr.mean())


def _log_grid(fig: go.Figure, values) -> None:
    """A log x axis ticked at the grid's own values (100, 200, ..., 1600), not at 2, 3, ... 9."""
    v = np.unique(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    ticks = dict(tickvals=v.tolist(), ticktext=[f"{t:g}" for t in v]) if len(v) <= 12 else {}
    fig.update_xaxes(type="log", **ticks)


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=height,
                      margin=dict(l=70, r=130, t=50, b=60), legend=dict(orientation="v"),
                      hoverlabel=dict(namelength=-1))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def _table(rows: list[dict]) -> str:
    """An HTML table of dicts with the same keys (a list, not a DataFrame: pandas would turn
    :class:`Raw` cells into plain strings)."""
    cols = list(rows[0]) if rows else []
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for row in rows:
        body.append("<tr>" + "".join(f"<td>{v if isinstance(v, Raw) else html.escape(str(v))}</td>"
                                     for v in (row.get(c) for c in cols)) + "</tr>")
    return (f"<div class=\"table\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _fmt(v, spec: str) -> str:
    try:
        return "-" if v is None or not np.isfinite(v) else format(v, spec)
    except TypeError:
        return str(v)


def _finite_xy(x, y) -> int:
    """How many points of a trace can be drawn (both coordinates finite numbers)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return int((np.isfinite(x) & np.isfinite(y)).sum())


# ---------------------------------------------------------------------------------------------
# A run folder.

def _mean_ci(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(Z95 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def _s(stats: dict, key: str) -> float | None:
    """A latency statistic in seconds from a summary's milliseconds (None stays None)."""
    v = (stats or {}).get(key)
    return None if v is None else v / 1000.0


def run_table(summary: dict) -> str:
    rows = []
    for r in summary["results"]:
        e2e, wait = r["e2el_ms"], r["queue_wait_ms"]
        ttft, tpot = r.get("ttft_ms") or {}, r.get("tpot_ms") or {}
        rows.append({
            "policy": r["policy"], "accuracy": _fmt(r["accuracy"], ".3f"),
            "exp. accuracy": _fmt(r["expected_accuracy"], ".3f"),
            "tokens/query": _fmt(r["tokens_per_query"], ",.1f"),
            "abandon": _fmt(r["abandon_rate"], ".1%"),
            "E2E p50 (s)": _fmt(_s(e2e, "median"), ".2f"),
            "E2E p99 (s)": _fmt(_s(e2e, "p99"), ".2f"),
            "TTFT p50 (s)": _fmt(_s(ttft, "median"), ".2f"),
            "TTFT p99 (s)": _fmt(_s(ttft, "p99"), ".2f"),
            "TPOT mean (ms)": _fmt(tpot.get("mean"), ".1f"),
            "TPOT p99 (ms)": _fmt(tpot.get("p99"), ".1f"),
            "wait p99 (s)": _fmt(_s(wait, "p99"), ".2f"),
            "GPU busy": _fmt(r["gpu_utilisation"], ".0%"),
            "GPU s/query": _fmt(r["gpu_seconds_per_query"], ".4f"),
        })
    return _table(rows)


def _near(points: dict[str, tuple[float, float]], tol: float = 0.02) -> list[tuple[str, str]]:
    """Pairs of policies whose points are within ``tol`` of the plotted ranges of each other."""
    names = list(points)
    xy = np.array([points[n] for n in names], dtype=float).reshape(-1, 2)
    span = np.ptp(xy, axis=0) if len(xy) > 1 else np.ones(2)
    span = np.where(span > 0, span, 1.0)
    out = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if np.all(np.abs(xy[i] - xy[j]) <= tol * span):
                out.append((names[i], names[j]))
    return out


def run_figures(q: pd.DataFrame, summary: dict, engine_ts: pd.DataFrame | None = None
                ) -> tuple[str, list[tuple[str, go.Figure, str]]]:
    policies = [r["policy"] for r in summary["results"]]
    style = {p: _style(i) for i, p in enumerate(policies)}
    groups = {p: q[q["policy"] == p] for p in policies}
    table = run_table(summary)
    figs = []

    # Tokens per query vs accuracy, 95% normal intervals over queries on both axes.
    fig = go.Figure()
    points = {}
    for p, g in groups.items():
        if not len(g):
            continue
        ya, yh = _mean_ci(g["expected_accuracy"].to_numpy())
        xa, xh = _mean_ci(g["tokens_generated"].to_numpy())
        points[p] = (xa, ya)
        fig.add_trace(go.Scatter(x=[xa], y=[ya], mode="markers", name=p,
                                 marker=_marker(style[p]), customdata=[[xh, yh]],
                                 error_y=dict(type="data", array=[yh], visible=True,
                                              color=style[p]["color"]),
                                 error_x=dict(type="data", array=[xh], visible=True,
                                              color=style[p]["color"]),
                                 hovertemplate=f"<b>{html.escape(p)}</b><br>%{{x:,.1f}} "
                                 "± %{customdata[0]:.1f} tokens/query<br>expected accuracy "
                                 "%{y:.3f} ± %{customdata[1]:.3f}<extra></extra>"))
    note = "Up and to the left is better; each policy is one point of the frontier."
    near = _near(points)
    if near:
        note += (" Nearly the same point: " + "; ".join(f"{a} and {b}" for a, b in near)
                 + " (the later policy's smaller marker sits inside the earlier one's).")
    if fig.data:
        figs.append(("pareto", _layout(fig, "Tokens per query vs accuracy (95% intervals over "
                                       "queries)", TOKENS, ACCURACY), note))

    # Accuracy by the cap each query got (quantile bins of the allocated budget).
    fig = go.Figure()
    for p, g in groups.items():
        b = g["budget"].to_numpy(dtype=float)
        acc = g["expected_accuracy"].to_numpy(dtype=float)
        if not len(b):
            continue
        edges = np.unique(np.quantile(b, np.linspace(0, 1, 11)))
        if len(edges) < 2:
            xs, ys, ns = [float(b[0])], [float(acc.mean())], [len(b)]
        else:
            idx = np.clip(np.searchsorted(edges, b, side="right") - 1, 0, len(edges) - 2)
            xs, ys, ns = [], [], []
            for k in range(len(edges) - 1):
                m = idx == k
                if m.any():
                    xs.append(float(b[m].mean()))
                    ys.append(float(acc[m].mean()))
                    ns.append(int(m.sum()))
        st = style[p]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=p,
                                 marker=_marker(st, st["size"] - 4),
                                 line=_line(st), customdata=ns,
                                 hovertemplate=f"<b>{html.escape(p)}</b><br>cap %{{x:.0f}} tokens: "
                                 "accuracy %{y:.3f} (%{customdata} queries)<extra></extra>"))
    if fig.data:
        figs.append(("accuracy-budget", _layout(fig, "Accuracy vs allocated budget (deciles of "
                                                "the caps)", "token cap, mean of the decile "
                                                "(tokens/query)", ACCURACY),
                     "How accurate queries were at the cap they received; abandoned queries sit "
                     "at 0."))

    # E2E latency CDFs over served queries.
    fig = go.Figure()
    for p, g in groups.items():
        served = g[~g["abandoned"]]
        e2e = np.sort((served["finish_s"] - served["arrival_s"]).to_numpy(dtype=float))
        e2e = e2e[np.isfinite(e2e)]
        if not len(e2e):
            continue
        k = _thin(e2e)
        fig.add_trace(go.Scatter(x=e2e[k], y=(k + 1) / len(e2e), mode="lines", name=p,
                                 line=_line(style[p], shape="hv"),
                                 hovertemplate=f"<b>{html.escape(p)}</b><br>%{{y:.0%}} within "
                                 "%{x:.2f} s<extra></extra>"))
    if fig.data:
        figs.append(("latency-cdf", _layout(fig, "End-to-end latency CDF (served queries)",
                                            "E2E latency, arrival to last token (s)",
                                            "share of served queries (fraction)"), ""))

    # Over time: shadow price, queue length and KV use (the engine's samples when recorded).
    over_time = time_series(q, policies)
    kv_note = ("KV tokens held by running requests (prompt + tokens generated so far, "
               "interpolated between first and last token)")
    engine_kv = kv_use_series(engine_ts, policies)
    if engine_kv:
        over_time["KV cache use"] = engine_kv
        over_time["KV tokens in use"] = {}
        kv_note = "the engine's KV cache use (share of the blocks, mean over replicas)"
    fig, single = over_time_figure(over_time, policies, style)
    if fig is not None:
        note = ("Shadow price lambda/alpha at each decision; queries waiting (for a decision or a "
                f"batch slot); {kv_note}. Each panel's legend lists the policies it has data for.")
        if single:
            note += (" " + ", ".join(single) + (" sets" if len(single) == 1 else " set")
                     + " one price for the whole batch: drawn as a dashed line over the run, "
                     "marked at the decision.")
        figs.append(("over-time", fig, note))

    # Budget allocation by dataset.
    fig = go.Figure()
    for p, g in groups.items():
        by = g.groupby("dataset", sort=True).agg(budget=("budget", "mean"), abandon=("abandoned", "mean"))
        if len(by):
            fig.add_trace(go.Bar(x=list(by.index), y=by["budget"].to_numpy(), name=p,
                                 marker_color=style[p]["color"], customdata=by["abandon"].to_numpy(),
                                 hovertemplate=f"<b>{html.escape(p)}</b><br>%{{x}}: mean cap "
                                 "%{y:.0f} tokens, abandoned %{customdata:.0%}<extra></extra>"))
    if fig.data:
        fig.update_layout(barmode="group")
        fig = _layout(fig, "Budget allocation by dataset", "dataset (trace set)",
                      "mean token cap (tokens/query)")
        fig.update_xaxes(type="category")
        figs.append(("by-dataset", fig, ""))
    return table, figs


OVER_TIME_Y = {"shadow price": "shadow price (accuracy/token)",
               "queue length": "queries waiting (count)",
               "KV cache use": "KV cache use (share of blocks)",
               "KV tokens in use": "KV tokens held (tokens)"}


def over_time_figure(over_time: dict, policies: list[str], style: dict
                     ) -> tuple[go.Figure | None, list[str]]:
    """Stacked panels sharing the time axis, each with its own legend beside it.

    A policy with a single price (CLEAR over the whole run decides once) is a dashed horizontal
    line over the run's time span with a marker at the decision, not a lone dot.
    Returns the figure (None without data) and the policies drawn that way.
    """
    panels = [k for k in OVER_TIME_Y if over_time.get(k)]
    if not panels:
        return None, []
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=panels)
    t_all = [np.asarray(x, dtype=float) for key in panels for x, _ in over_time[key].values()]
    t_lo = float(min(np.nanmin(t) for t in t_all if len(t)))
    t_hi = float(max(np.nanmax(t) for t in t_all if len(t)))
    single = []
    for i, key in enumerate(panels, start=1):
        legend = "legend" if i == 1 else f"legend{i}"
        for p in policies:
            if p not in over_time[key]:
                continue
            x, y = (np.asarray(v, dtype=float) for v in over_time[key][p])
            st = style[p]
            kw = dict(name=p, legendgroup=p, legend=legend, line=_line(st))
            if key == "shadow price" and len(x) == 1:
                single.append(p)
                fig.add_trace(go.Scatter(
                    x=[t_lo, x[0], t_hi], y=[y[0]] * 3, mode="lines+markers",
                    marker={**_marker(st), "size": [0, st["size"], 0]},
                    hovertemplate=f"<b>{html.escape(p)}</b>: one price for the whole batch, "
                    f"{y[0]:.4g}, set at t = {x[0]:.1f} s<extra></extra>",
                    **{**kw, "name": f"{p} (one batch price)", "line": _line({**st, "dash": "dash"})}),
                    row=i, col=1)
                continue
            unit = {"shadow price": "", "queue length": " waiting", "KV cache use": "",
                    "KV tokens in use": " tokens"}[key]
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers" if key == "shadow price" and len(x) <= 200 else "lines",
                marker=_marker(st, 6),
                hovertemplate=f"<b>{html.escape(p)}</b><br>t = %{{x:.1f}} s: "
                f"%{{y:.4g}}{unit}<extra></extra>", **kw), row=i, col=1)
        top = fig.layout[f"yaxis{i if i > 1 else ''}"].domain[1]
        fig.update_layout({legend: dict(x=1.01, xanchor="left", y=top, yanchor="top",
                                        title=dict(text=key))})
        fig.update_yaxes(title_text=OVER_TIME_Y[key], row=i, col=1)
        if key == "KV cache use":
            fig.update_yaxes(tickformat=".0%", row=i, col=1)
        if key == "shadow price":  # from 0, with room above (a constant price gets no -1..1 range)
            top_price = max(float(np.nanmax(v[1])) for v in over_time[key].values())
            low_price = min(float(np.nanmin(v[1])) for v in over_time[key].values())
            if np.isfinite(top_price) and top_price > 0 and low_price >= 0:
                fig.update_yaxes(range=[0, 1.15 * top_price], row=i, col=1)
    fig.update_layout(title="Over time", template="plotly_white", height=260 * len(panels) + 90,
                      margin=dict(l=70, r=20, t=70, b=60), hoverlabel=dict(namelength=-1))
    fig.update_xaxes(title_text="simulated time (s)", row=len(panels), col=1)
    return fig, single


def kv_use_series(ts: pd.DataFrame | None, policies: list[str]) -> dict:
    """Per policy, (t, mean KV cache use over replicas) from the engine's timeseries.parquet."""
    if ts is None or not len(ts) or not {"policy", "t_s", "kv_use"} <= set(ts.columns):
        return {}
    out = {}
    for p in policies:
        g = ts[ts["policy"] == p]
        if len(g):
            m = g.groupby("t_s", sort=True)["kv_use"].mean()
            k = _thin(m.to_numpy(), 2000)
            out[p] = (m.index.to_numpy()[k], m.to_numpy()[k])
    return out


def time_series(q: pd.DataFrame, policies: list[str], points: int = 400) -> dict:
    """Per policy, (t, value) curves of shadow price, queue length and KV tokens in use."""
    out = {"shadow price": {}, "queue length": {}, "KV tokens in use": {}}
    for p in policies:
        g = q[q["policy"] == p]
        if not len(g):
            continue
        price = g[["decision_s", "shadow_price"]].dropna().sort_values("decision_s", kind="stable")
        price = price.drop_duplicates("decision_s", keep="last")
        if len(price):
            out["shadow price"][p] = (price["decision_s"].to_numpy(), price["shadow_price"].to_numpy())
        arrival = g["arrival_s"].to_numpy(dtype=float)
        sched = g["scheduled_s"].to_numpy(dtype=float)
        # An abandoned query leaves the queue at its decision; a served one when it is scheduled.
        leave = np.where(g["abandoned"].to_numpy(), g["decision_s"].to_numpy(dtype=float), sched)
        finish = g["finish_s"].to_numpy(dtype=float)
        end = np.nanmax(np.concatenate([finish, leave, arrival]))
        t = np.linspace(float(arrival.min()), float(end), points)
        waiting = (np.searchsorted(np.sort(arrival), t, side="right")
                   - np.searchsorted(np.sort(leave[np.isfinite(leave)]), t, side="right"))
        out["queue length"][p] = (t, waiting)
        first = g["first_token_s"].to_numpy(dtype=float)
        gen = g["tokens_generated"].to_numpy(dtype=float)
        prompt = g["prompt_tokens"].to_numpy(dtype=float)
        ok = np.isfinite(first) & np.isfinite(finish)
        if ok.any():
            f, e, n, pr = first[ok], finish[ok], gen[ok], prompt[ok]
            kv = np.zeros(points)
            for lo in range(0, points, 50):  # chunks bound memory: (50 x queries) at a time
                tt = t[lo:lo + 50, None]
                running = (tt >= f) & (tt < e)
                done = np.where(e > f, (tt - f) / np.where(e > f, e - f, 1.0), 1.0)
                held = pr + 1 + np.clip(done, 0, 1) * np.maximum(n - 1, 0)
                kv[lo:lo + 50] = np.where(running, held, 0.0).sum(axis=1)
            out["KV tokens in use"][p] = (t, kv)
    return out


# ---------------------------------------------------------------------------------------------
# A sweep folder.

def _x_axis(agg: pd.DataFrame, keys: list[str]) -> str:
    """The budget when it is swept, else the first numeric grid axis, else the budget."""
    numeric = [k for k in keys if k in agg.columns and pd.api.types.is_numeric_dtype(agg[k])]
    return "budget" if "budget" in keys or not numeric else numeric[0]


def _groups(agg: pd.DataFrame, keys: list[str], x: str, policies: list[str]):
    """(label, policy, style, frame) per policy and combination of the other grid axes.

    With other axes (say four streams), colour tells the stream and the dash and marker the
    policy, so twelve curves stay readable; with none, each policy has its own colour.
    """
    others = [k for k in keys if k != x and k in agg.columns]
    combos: dict = {}
    for i, p in enumerate(policies):
        g = agg[agg["policy"] == p]
        st = _style(i)
        if not len(g):
            continue
        if not others:
            yield p, p, st, g
            continue
        for vals, sub in g.groupby(others, sort=False):
            vals = vals if isinstance(vals, tuple) else (vals,)
            c = COLORS[combos.setdefault(vals, len(combos)) % len(COLORS)]
            label = p + " · " + ", ".join(f"{k}={v}" for k, v in zip(others, vals))
            yield label, p, {**st, "color": c}, sub


def _band(fig: go.Figure, x, lo, hi, color: str, group: str, **where) -> None:
    x, lo, hi = np.asarray(x, dtype=float), np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 1:
        return
    x, lo, hi = x[ok], lo[ok], hi[ok]
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                             mode="lines", fill="toself", fillcolor=_rgba(color, 0.15),
                             line=dict(width=0),
                             hoverinfo="skip", showlegend=False, legendgroup=group,
                             name=f"{group} 95% CI"), **where)


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (fewer or equal tokens and higher accuracy)."""
    order = np.lexsort((-y, x))
    keep, best = [], -np.inf
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)


def _ci(d: dict, m: str, spec: str, scale: float = 1.0) -> str:
    """The mean of metric ``m`` in an aggregate row, with '± half-width' below it (no interval
    with one seed)."""
    mean, lo, hi = d.get(f"{m}_mean"), d.get(f"{m}_ci_lo"), d.get(f"{m}_ci_hi")
    text = html.escape(_fmt(None if mean is None else mean * scale, spec))
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        text += "<br><small>± " + html.escape(_fmt((hi - lo) / 2 * scale, spec)) + "</small>"
    return Raw(text)


def sweep_table(agg: pd.DataFrame, keys: list[str], x: str) -> str:
    rows = []
    for r in agg.itertuples(index=False):
        d = dict(zip(agg.columns, r))
        row = {"cell": d["cell"], "policy": d["policy"]}
        for k in keys:
            row[k] = d.get(k)
        if x not in keys:
            row[x] = d.get(x)
        row["accuracy"] = _ci(d, "accuracy", ".3f")
        row["exp. accuracy"] = _ci(d, "expected_accuracy", ".3f")
        row["tokens/query"] = _ci(d, "tokens_per_query", ",.1f")
        row["abandon"] = _ci(d, "abandon_rate", ".1%")
        row["E2E p50 (s)"] = _ci(d, "e2el_ms_median", ".2f", 1e-3)
        row["E2E p99 (s)"] = _ci(d, "e2el_ms_p99", ".2f", 1e-3)
        row["TTFT p50 (s)"] = _ci(d, "ttft_ms_median", ".2f", 1e-3)
        row["TTFT p99 (s)"] = _ci(d, "ttft_ms_p99", ".2f", 1e-3)
        row["TPOT mean (ms)"] = _ci(d, "tpot_ms_mean", ".1f")
        row["GPU busy"] = _fmt(d.get("gpu_utilisation_mean"), ".0%")
        row["seeds"] = d["n_seeds"]
        rows.append(row)
    return _table(rows)


LATENCY_PANELS = [("e2el_ms_median", "E2E latency p50", "E2E p50 (s)"),
                  ("e2el_ms_p99", "E2E latency p99", "E2E p99 (s)"),
                  ("ttft_ms_median", "TTFT p50", "TTFT p50 (s)"),
                  ("ttft_ms_p99", "TTFT p99", "TTFT p99 (s)")]


def latency_figure(groups: list, x: str, log_x: bool) -> go.Figure | None:
    """E2E p50/p99 and TTFT p50/p99 (means over seeds, 95% CI bands) vs the grid axis, every cell."""
    panels = [(m, t, y) for m, t, y in LATENCY_PANELS
              if any(f"{m}_mean" in g and np.isfinite(g[f"{m}_mean"].to_numpy(float)).any()
                     for *_, g in groups)]
    if not panels or not all(x in g for *_, g in groups):
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t, _ in panels],
                        horizontal_spacing=0.1, vertical_spacing=0.16)
    shown: set[str] = set()
    for k, (m, _t, ytitle) in enumerate(panels):
        r, c = k // cols + 1, k % cols + 1
        for label, _p, st, g in groups:
            if f"{m}_mean" not in g:
                continue
            g = g.sort_values(x, kind="stable")
            xs, ys = g[x].to_numpy(float), g[f"{m}_mean"].to_numpy(float) / 1000.0
            if not _finite_xy(xs, ys):
                continue
            _band(fig, xs, g[f"{m}_ci_lo"].to_numpy(float) / 1000.0,
                  g[f"{m}_ci_hi"].to_numpy(float) / 1000.0, st["color"], label, row=r, col=c)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label,
                                     legendgroup=label, showlegend=label not in shown,
                                     marker=_marker(st, st["size"] - 4),
                                     line=_line(st),
                                     hovertemplate=f"<b>{html.escape(label)}</b><br>{html.escape(x)}"
                                     f" = %{{x:g}}: {html.escape(ytitle)} %{{y:.2f}}<extra></extra>"),
                          row=r, col=c)
            shown.add(label)
        fig.update_yaxes(title_text=ytitle, rangemode="tozero", row=r, col=c)
        fig.update_xaxes(title_text=axis_title(x), row=r, col=c)
    if log_x:
        _log_grid(fig, [v for *_, g in groups for v in g[x].to_numpy(float)])
    fig.update_layout(title=f"Latency vs {x} at every cell (means over seeds, bands: 95% CI)",
                      template="plotly_white", height=330 * rows + 110,
                      margin=dict(l=70, r=130, t=70, b=60), hoverlabel=dict(namelength=-1))
    return fig


def sweep_figures(res: pd.DataFrame, agg: pd.DataFrame, man: dict):
    keys = list(man.get("keys", []))
    policies = list(dict.fromkeys(man.get("policies") or agg["policy"]))
    pstyle = {p: _style(i) for i, p in enumerate(policies)}
    x = _x_axis(agg, keys)
    log_x = x in agg.columns and is_geometric(agg[x].to_numpy(float))
    table = sweep_table(agg, keys, x)
    figs = []

    # Pareto frontier per policy (and per combination of the other axes), CI band over seeds.
    fig = go.Figure()
    groups = list(_groups(agg, keys, x, policies))
    for label, _p, st, g in groups:
        tx, ty = g["tokens_per_query_mean"].to_numpy(float), g["expected_accuracy_mean"].to_numpy(float)
        ok = np.isfinite(tx) & np.isfinite(ty)
        if not ok.any():
            continue
        g, tx, ty = g[ok], tx[ok], ty[ok]
        front = pareto_front(tx, ty)
        fx, lo, hi = tx[front], g["expected_accuracy_ci_lo"].to_numpy(float)[front], \
            g["expected_accuracy_ci_hi"].to_numpy(float)[front]
        _band(fig, fx, lo, hi, st["color"], label)
        fig.add_trace(go.Scatter(x=fx, y=ty[front], mode="lines+markers", name=label,
                                 legendgroup=label, line=_line(st),
                                 marker=_marker(st), hoverinfo="skip"))
        ex = (g["tokens_per_query_ci_hi"] - g["tokens_per_query_mean"]).to_numpy(float)
        ey = (g["expected_accuracy_ci_hi"] - g["expected_accuracy_mean"]).to_numpy(float)
        fig.add_trace(go.Scatter(x=tx, y=ty, mode="markers", name=label, legendgroup=label,
                                 marker=_marker(st), showlegend=False,
                                 error_x=dict(type="data", array=np.nan_to_num(ex), visible=True,
                                              color=st["color"]),
                                 error_y=dict(type="data", array=np.nan_to_num(ey), visible=True,
                                              color=st["color"]),
                                 customdata=g[x].to_numpy() if x in g else None,
                                 hovertemplate=f"<b>{html.escape(label)}</b><br>{html.escape(x)}"
                                 "=%{customdata}: %{x:,.1f} tokens/query, "
                                 "accuracy %{y:.3f}<extra></extra>"))
    fig = _layout(fig, "Pareto frontier: tokens per query vs accuracy "
                  "(bands and bars: 95% CI over seeds)", TOKENS, ACCURACY, 480)
    if log_x and x == "budget" and (agg["tokens_per_query_mean"] > 0).all():
        fig.update_xaxes(type="log")  # tokens follow a geometric budget grid
    if fig.data:
        figs.append(("pareto", fig, "Lines join each policy's frontier (the points none of its "
                     "other points beats); the markers are every cell."))

    # Accuracy vs budget (or the first numeric grid axis).
    if x in agg.columns:
        fig = go.Figure()
        for label, _p, st, g in groups:
            g = g.sort_values(x, kind="stable")
            xs, ys = g[x].to_numpy(float), g["expected_accuracy_mean"].to_numpy(float)
            if not _finite_xy(xs, ys):
                continue
            _band(fig, xs, g["expected_accuracy_ci_lo"].to_numpy(float),
                  g["expected_accuracy_ci_hi"].to_numpy(float), st["color"], label)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label,
                                     legendgroup=label, marker=_marker(st, st["size"] - 4),
                                     line=_line(st),
                                     hovertemplate=f"<b>{html.escape(label)}</b><br>{html.escape(x)}"
                                     " = %{x:g}: accuracy %{y:.3f}<extra></extra>"))
        if fig.data:
            fig = _layout(fig, f"Accuracy vs {x} (band: 95% CI over seeds)", axis_title(x),
                          ACCURACY, 460)
            if log_x:
                _log_grid(fig, agg[x].to_numpy(float))
            figs.append(("accuracy-budget", fig, ""))

        fig = latency_figure(groups, x, log_x)
        if fig is not None:
            figs.append(("latency-budget", fig, "The other half of each trade-off: what a policy's "
                         "accuracy costs in latency at every cell. TTFT counts from arrival, so it "
                         "includes waiting for an allocation window or batch."))

    # Latency CDFs and budget by dataset at the middle cell (averaged over its seeds).
    cells = sorted(res["cell"].unique())
    mid = int(cells[len(cells) // 2])
    at = res[res["cell"] == mid]
    where = ", ".join(f"{k}={at[k].iloc[0]}" for k in keys if k in at.columns)
    fig = go.Figure()
    for p in policies:
        qs = [np.asarray(v, dtype=float) for v in at.loc[at["policy"] == p, "e2el_quantiles_ms"]
              if v is not None and len(v)]
        if qs:
            mean_q = np.mean(np.vstack(qs), axis=0) / 1000.0
            st = pstyle[p]
            fig.add_trace(go.Scatter(x=mean_q, y=np.linspace(0, 1, len(mean_q)), mode="lines",
                                     name=p, line=_line(st),
                                     hovertemplate=f"<b>{html.escape(p)}</b><br>%{{y:.0%}} within "
                                     "%{x:.2f} s<extra></extra>"))
    if fig.data:
        figs.append(("latency-cdf", _layout(fig, f"End-to-end latency CDF at the middle cell "
                                            f"({where}; quantiles averaged over seeds)",
                                            "E2E latency, arrival to last token (s)",
                                            "share of served queries (fraction)"), ""))
    fig = go.Figure()
    for p in policies:
        dicts = [json.loads(v) for v in at.loc[at["policy"] == p, "budget_by_dataset"] if v]
        if dicts:
            by = pd.DataFrame(dicts).mean(axis=0).sort_index()
            fig.add_trace(go.Bar(x=list(by.index), y=by.to_numpy(), name=p,
                                 marker_color=pstyle[p]["color"],
                                 hovertemplate=f"<b>{html.escape(p)}</b><br>%{{x}}: mean cap "
                                 "%{y:.0f} tokens<extra></extra>"))
    if fig.data:
        fig.update_layout(barmode="group")
        fig = _layout(fig, f"Budget allocation by dataset at the middle cell ({where})",
                      "dataset (trace set)", "mean token cap (tokens/query)")
        fig.update_xaxes(type="category")
        figs.append(("by-dataset", fig, ""))
    return table, figs


# ---------------------------------------------------------------------------------------------
# The page.

def render(title: str, meta: str, table: str, figs: list[tuple[str, go.Figure, str]]) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{html.escape(title)}</title><style>{CSS}</style>"
             f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>",
             f"<h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(meta)}</p>",
             "<h2>Summary</h2>", table]
    for div_id, fig, note in figs:
        parts.append(f"<h2>{html.escape(fig.layout.title.text or div_id)}</h2>")
        fig.update_layout(title=None)
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{div_id}",
                                 config={"displaylogo": False, "responsive": True}))
        if note:
            parts.append(f"<p class=\"note\">{html.escape(note)}</p>")
    parts.append("<p class=\"note\">Made by clearsim. Self-contained: plotly.js is embedded, "
                 "no network needed.</p></body></html>\n")
    return "\n".join(parts)


def build_report(folder: str | os.PathLike, *, queries: pd.DataFrame | None = None,
                 summary: dict | None = None) -> str:
    """The report page for a run or sweep folder, as HTML text."""
    folder = Path(folder)
    if (folder / "results.parquet").is_file():
        res, agg, man = read_sweep_folder(folder)  # checked there (sim/experiments/folders.py)
        table, figs = sweep_figures(res, agg, man)
        meta = (f"sweep '{man.get('name')}': {man.get('n_cells')} cells x {len(man.get('seeds', []))} "
                f"seeds x {len(man.get('policies', []))} policies = {len(res)} rows; grid over "
                f"{', '.join(man.get('keys', [])) or 'nothing'}")
        return render(f"clearsim sweep: {man.get('name')}", meta, table, figs)
    engine_ts = None
    if queries is None or summary is None:
        queries, summary, engine_ts = read_run_folder(folder)  # checked there (sim/experiments/folders.py)
    elif (folder / "timeseries.parquet").is_file():
        engine_ts = pd.read_parquet(folder / "timeseries.parquet")
    table, figs = run_figures(queries, summary, engine_ts)
    n = summary["results"][0]["n_queries"] if summary["results"] else 0
    meta = (f"run of scenario '{summary['scenario']}': {n} queries, seed {summary['seed']}, "
            f"budget {summary['budget']:g} tokens/query, fitted beta {summary['fitted_beta']:.4g}")
    return render(f"clearsim run: {summary['scenario']}", meta, table, figs)


def write_report(folder: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 queries: pd.DataFrame | None = None, summary: dict | None = None) -> Path:
    """Write ``report.html`` (atomically) for a run or sweep folder; return its path."""
    folder = Path(folder)
    target = Path(out) if out is not None else folder / "report.html"
    text = build_report(folder, queries=queries, summary=summary)
    return write_text_atomic(target, text)


def report(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """``clearsim report DIR``: (re)write DIR/report.html for a run or a sweep folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("no such folder", where=str(folder))
    target = check_out_file(out if out is not None else folder / "report.html")  # before reading
    try:
        return write_report(folder, target)
    except OSError as exc:  # the disk filled up, or the folder changed under us: nothing left
        raise UserError(f"cannot write the report ({exc.strerror or exc.__class__.__name__})",
                        where=str(target)) from None


__all__ = ["report", "write_report", "build_report"]
