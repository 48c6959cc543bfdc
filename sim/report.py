"""The interactive report: one self-contained ``report.html`` for a run folder or a sweep folder.

Plotly.js is embedded in the page (no network, works from a file or an e-mail attachment), and
every figure is only drawn when it has data, so a report never shows an empty chart.

* A **run** (``queries.parquet`` + ``summary.json``): summary table; tokens per query vs accuracy
  per policy with 95% intervals over queries; accuracy by allocated budget; e2e latency CDFs;
  shadow price, queue length and KV tokens in use over time; mean budget by dataset.
* A **sweep** (``results.parquet`` + ``aggregate.parquet``): summary table with 95% intervals
  over seeds; the Pareto frontier of tokens per query vs accuracy per policy with its CI band;
  accuracy vs budget (or the first numeric grid axis) with CI bands; e2e latency CDFs and budget
  by dataset at the grid's middle cell.

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

from sim.errors import UserError
from sim.files import write_text_atomic
from sim.folders import check_out_file, read_run_folder, read_sweep_folder

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
Z95 = 1.959963984540054
MAX_POINTS = 600  # per curve: keeps the page light without changing what a reader sees

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
p.meta{color:#555;margin-top:0} table{border-collapse:collapse;font-size:.88em}
th,td{padding:4px 10px;border-bottom:1px solid #eee;text-align:right} th{background:#f6f6f6}
td:first-child,th:first-child{text-align:left} .note{color:#666;font-size:.88em}
"""


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def _thin(x: np.ndarray, n: int = MAX_POINTS) -> np.ndarray:
    """Evenly spaced indices (ends included) so a long curve keeps its shape in few points."""
    if len(x) <= n:
        return np.arange(len(x))
    return np.unique(np.linspace(0, len(x) - 1, n).round().astype(int))


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=height,
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="v"))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _fmt(v, spec: str) -> str:
    try:
        return "-" if v is None or not np.isfinite(v) else format(v, spec)
    except TypeError:
        return str(v)


# ---------------------------------------------------------------------------------------------
# A run folder.

def _mean_ci(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(Z95 * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def run_figures(q: pd.DataFrame, summary: dict, engine_ts: pd.DataFrame | None = None
                ) -> tuple[str, list[tuple[str, go.Figure, str]]]:
    policies = [r["policy"] for r in summary["results"]]
    color = {p: COLORS[i % len(COLORS)] for i, p in enumerate(policies)}
    groups = {p: q[q["policy"] == p] for p in policies}
    rows = []
    for r in summary["results"]:
        e2e, wait = r["e2el_ms"], r["queue_wait_ms"]
        rows.append({
            "policy": r["policy"], "accuracy": _fmt(r["accuracy"], ".3f"),
            "exp. accuracy": _fmt(r["expected_accuracy"], ".3f"),
            "tokens/query": _fmt(r["tokens_per_query"], ",.1f"),
            "abandon": _fmt(r["abandon_rate"], ".1%"),
            "e2e p50 s": _fmt(None if e2e["median"] is None else e2e["median"] / 1000, ".2f"),
            "e2e p99 s": _fmt(None if e2e["p99"] is None else e2e["p99"] / 1000, ".2f"),
            "wait p99 s": _fmt(None if wait["p99"] is None else wait["p99"] / 1000, ".2f"),
            "GPU busy": _fmt(r["gpu_utilisation"], ".0%"),
            "GPU s/query": _fmt(r["gpu_seconds_per_query"], ".4f"),
        })
    table = _table(pd.DataFrame(rows))
    figs = []

    # Tokens per query vs accuracy, 95% normal intervals over queries on both axes.
    fig = go.Figure()
    for p, g in groups.items():
        if not len(g):
            continue
        ya, yh = _mean_ci(g["expected_accuracy"].to_numpy())
        xa, xh = _mean_ci(g["tokens_generated"].to_numpy())
        fig.add_trace(go.Scatter(x=[xa], y=[ya], mode="markers+text", name=p, text=[p],
                                 textposition="top center", marker=dict(size=12, color=color[p]),
                                 error_y=dict(type="data", array=[yh], visible=True),
                                 error_x=dict(type="data", array=[xh], visible=True)))
    figs.append(("pareto", _layout(fig, "Tokens per query vs accuracy (95% intervals over queries)",
                                   "generated tokens per query", "expected accuracy"),
                 "Up and to the left is better; each policy is one point of the frontier."))

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
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=p,
                                 marker=dict(color=color[p]), customdata=ns,
                                 hovertemplate="cap %{x:.0f}: accuracy %{y:.3f} (%{customdata} queries)"))
    figs.append(("accuracy-budget", _layout(fig, "Accuracy vs allocated budget (deciles of the caps)",
                                            "token cap (mean of the bin)", "expected accuracy"),
                 "How accurate queries were at the cap they received; abandoned queries sit at 0."))

    # e2e latency CDFs over served queries.
    fig = go.Figure()
    for p, g in groups.items():
        served = g[~g["abandoned"]]
        e2e = np.sort((served["finish_s"] - served["arrival_s"]).to_numpy(dtype=float))
        e2e = e2e[np.isfinite(e2e)]
        if not len(e2e):
            continue
        k = _thin(e2e)
        fig.add_trace(go.Scatter(x=e2e[k], y=(k + 1) / len(e2e), mode="lines", name=p,
                                 line=dict(color=color[p], shape="hv")))
    if fig.data:
        figs.append(("latency-cdf", _layout(fig, "End-to-end latency CDF (served queries)",
                                            "arrival to last token (s)", "share of queries"), ""))

    # Over time: shadow price, queue length and KV use (the engine's samples when recorded).
    over_time = time_series(q, policies)
    kv_note = ("KV tokens held by running requests (prompt + tokens generated so far, "
               "interpolated between first and last token)")
    engine_kv = kv_use_series(engine_ts, policies)
    if engine_kv:
        over_time["KV cache use"] = engine_kv
        over_time["KV tokens in use"] = {}
        kv_note = "the engine's KV cache use (share of the blocks, mean over replicas)"
    panels = [k for k in ("shadow price", "queue length", "KV cache use", "KV tokens in use")
              if over_time.get(k)]
    if panels:
        fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                            subplot_titles=panels)
        shown: set[str] = set()  # one legend entry per policy, whichever panel it first shows in
        for i, key in enumerate(panels, start=1):
            for p, (x, y) in over_time[key].items():
                fig.add_trace(go.Scatter(x=x, y=y, name=p, legendgroup=p,
                                         mode="lines+markers" if key == "shadow price" else "lines",
                                         showlegend=p not in shown, line=dict(color=color[p])),
                              row=i, col=1)
                shown.add(p)
        fig.update_layout(title="Over time", template="plotly_white", height=260 * len(panels) + 80,
                          margin=dict(l=60, r=20, t=70, b=50))
        fig.update_xaxes(title_text="simulated time (s)", row=len(panels), col=1)
        if "KV cache use" in panels:
            fig.update_yaxes(tickformat=".0%", row=panels.index("KV cache use") + 1, col=1)
        figs.append(("over-time", fig, "Shadow price lambda/alpha at each decision; queries waiting "
                     f"(for a decision or a batch slot); {kv_note}."))

    # Budget allocation by dataset.
    fig = go.Figure()
    for p, g in groups.items():
        by = g.groupby("dataset", sort=True).agg(budget=("budget", "mean"), abandon=("abandoned", "mean"))
        if len(by):
            fig.add_trace(go.Bar(x=list(by.index), y=by["budget"].to_numpy(), name=p,
                                 marker_color=color[p], customdata=by["abandon"].to_numpy(),
                                 hovertemplate="%{x}: mean cap %{y:.0f}, abandoned %{customdata:.0%}"))
    fig.update_layout(barmode="group")
    figs.append(("by-dataset", _layout(fig, "Budget allocation by dataset", "dataset",
                                       "mean token cap per query"), ""))
    return table, figs


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


DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]


def _groups(agg: pd.DataFrame, keys: list[str], x: str, policies: list[str]):
    """(label, policy, color, dash, frame) per policy and combination of the other grid axes.

    With other axes (say four streams), colour tells the stream and the dash the policy, so
    twelve curves stay readable; with none, each policy has its own colour.
    """
    others = [k for k in keys if k != x and k in agg.columns]
    combos: dict = {}
    for i, p in enumerate(policies):
        g = agg[agg["policy"] == p]
        if not others:
            yield p, p, COLORS[i % len(COLORS)], "solid", g
            continue
        for vals, sub in g.groupby(others, sort=False):
            vals = vals if isinstance(vals, tuple) else (vals,)
            c = COLORS[combos.setdefault(vals, len(combos)) % len(COLORS)]
            label = p + " · " + ", ".join(f"{k}={v}" for k, v in zip(others, vals))
            yield label, p, c, DASHES[i % len(DASHES)], sub


def _band(fig: go.Figure, x, lo, hi, color: str, group: str) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.sum() < 1:
        return
    x, lo, hi = np.asarray(x)[ok], np.asarray(lo)[ok], np.asarray(hi)[ok]
    fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                             mode="lines", fill="toself", fillcolor=_rgba(color, 0.15),
                             line=dict(width=0),
                             hoverinfo="skip", showlegend=False, legendgroup=group,
                             name=f"{group} 95% CI"))


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
    """'mean ± half-width' of metric ``m`` in an aggregate row (just the mean with one seed)."""
    mean, lo, hi = d.get(f"{m}_mean"), d.get(f"{m}_ci_lo"), d.get(f"{m}_ci_hi")
    text = _fmt(None if mean is None else mean * scale, spec)
    if lo is not None and np.isfinite(lo):
        text += " ± " + _fmt((hi - lo) / 2 * scale, spec)
    return text


def sweep_figures(res: pd.DataFrame, agg: pd.DataFrame, man: dict):
    keys = list(man.get("keys", []))
    policies = list(dict.fromkeys(man.get("policies") or agg["policy"]))
    pcolor = {p: COLORS[i % len(COLORS)] for i, p in enumerate(policies)}
    x = _x_axis(agg, keys)

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
        row["e2e p99 s"] = _ci(d, "e2el_ms_p99", ".2f", 1e-3)
        row["GPU busy"] = _fmt(d.get("gpu_utilisation_mean"), ".0%")
        row["seeds"] = d["n_seeds"]
        rows.append(row)
    table = _table(pd.DataFrame(rows))
    figs = []

    # Pareto frontier per policy (and per combination of the other axes), CI band over seeds.
    fig = go.Figure()
    groups = list(_groups(agg, keys, x, policies))
    for label, _p, c, dash, g in groups:
        tx, ty = g["tokens_per_query_mean"].to_numpy(float), g["expected_accuracy_mean"].to_numpy(float)
        front = pareto_front(tx, ty)
        fx, lo, hi = tx[front], g["expected_accuracy_ci_lo"].to_numpy(float)[front], \
            g["expected_accuracy_ci_hi"].to_numpy(float)[front]
        _band(fig, fx, lo, hi, c, label)
        fig.add_trace(go.Scatter(x=fx, y=ty[front], mode="lines", name=f"{label} frontier",
                                 legendgroup=label, line=dict(color=c, dash=dash)))
        ex = (g["tokens_per_query_ci_hi"] - g["tokens_per_query_mean"]).to_numpy(float)
        ey = (g["expected_accuracy_ci_hi"] - g["expected_accuracy_mean"]).to_numpy(float)
        fig.add_trace(go.Scatter(x=tx, y=ty, mode="markers", name=label, legendgroup=label,
                                 marker=dict(color=c, size=8), showlegend=False,
                                 error_x=dict(type="data", array=np.nan_to_num(ex), visible=True),
                                 error_y=dict(type="data", array=np.nan_to_num(ey), visible=True),
                                 customdata=g[x].to_numpy() if x in g else None,
                                 hovertemplate=f"{x}=%{{customdata}}: %{{x:.1f}} tokens/query, "
                                 "accuracy %{y:.3f}"))
    figs.append(("pareto", _layout(fig, "Pareto frontier: tokens per query vs accuracy "
                                   "(bands and bars: 95% CI over seeds)",
                                   "generated tokens per query", "expected accuracy", 480), ""))

    # Accuracy vs budget (or the first numeric grid axis).
    if x in agg.columns:
        fig = go.Figure()
        for label, _p, c, dash, g in groups:
            g = g.sort_values(x, kind="stable")
            xs = g[x].to_numpy(float)
            _band(fig, xs, g["expected_accuracy_ci_lo"].to_numpy(float),
                  g["expected_accuracy_ci_hi"].to_numpy(float), c, label)
            fig.add_trace(go.Scatter(x=xs, y=g["expected_accuracy_mean"].to_numpy(float),
                                     mode="lines+markers", name=label, legendgroup=label,
                                     line=dict(color=c, dash=dash)))
        figs.append(("accuracy-budget", _layout(fig, f"Accuracy vs {x} (band: 95% CI over seeds)",
                                                x, "expected accuracy", 460), ""))

    # Latency CDFs and budget by dataset at the middle cell (averaged over its seeds).
    mid = int(sorted(res["cell"].unique())[len(res["cell"].unique()) // 2])
    at = res[res["cell"] == mid]
    where = ", ".join(f"{k}={at[k].iloc[0]}" for k in keys if k in at.columns)
    fig = go.Figure()
    for p in policies:
        qs = [np.asarray(v, dtype=float) for v in at.loc[at["policy"] == p, "e2el_quantiles_ms"]
              if v is not None and len(v)]
        if qs:
            mean_q = np.mean(np.vstack(qs), axis=0) / 1000.0
            fig.add_trace(go.Scatter(x=mean_q, y=np.linspace(0, 1, len(mean_q)), mode="lines",
                                     name=p, line=dict(color=pcolor[p])))
    if fig.data:
        figs.append(("latency-cdf", _layout(fig, f"End-to-end latency CDF at the middle cell "
                                            f"({where}; quantiles averaged over seeds)",
                                            "arrival to last token (s)", "share of served queries"), ""))
    fig = go.Figure()
    for p in policies:
        dicts = [json.loads(v) for v in at.loc[at["policy"] == p, "budget_by_dataset"] if v]
        if dicts:
            by = pd.DataFrame(dicts).mean(axis=0).sort_index()
            fig.add_trace(go.Bar(x=list(by.index), y=by.to_numpy(), name=p, marker_color=pcolor[p]))
    if fig.data:
        fig.update_layout(barmode="group")
        figs.append(("by-dataset", _layout(fig, f"Budget allocation by dataset at the middle cell "
                                           f"({where})", "dataset", "mean token cap per query"), ""))
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
        res, agg, man = read_sweep_folder(folder)  # checked there (sim/folders.py)
        table, figs = sweep_figures(res, agg, man)
        meta = (f"sweep '{man.get('name')}': {man.get('n_cells')} cells x {len(man.get('seeds', []))} "
                f"seeds x {len(man.get('policies', []))} policies = {len(res)} rows; grid over "
                f"{', '.join(man.get('keys', [])) or 'nothing'}")
        return render(f"clearsim sweep: {man.get('name')}", meta, table, figs)
    engine_ts = None
    if queries is None or summary is None:
        queries, summary, engine_ts = read_run_folder(folder)  # checked there (sim/folders.py)
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
