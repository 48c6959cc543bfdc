"""The Python functions behind ``clearsim traces ...``: same names, same options.

``show``, ``import_traces`` (``import`` is a Python keyword), ``fit``, ``synth`` and ``predict``
each return plain data (dicts, paths) and write nothing but what they are asked to; the
``format_*`` helpers render them as the CLI prints them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from sim.foundation.errors import UserError
from sim.foundation.files import write_atomic, write_text_atomic
from traces.curves import accuracy_grid, fit_beta, solve_rate, true_tau
from traces.fit import BETA_METHODS, fit_beta_mle, fit_curves, fit_error
from traces.importers import FORMATS, import_generations, import_qwen_harness, load_tokenizer
from traces.registry import embedded_dir, list_trace_sets, load_trace_set, user_dir
from traces.schema import TraceSet

DEFAULT_BUDGETS = (128, 256, 512, 1024, 2048)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def _quantiles(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return {f"p{int(q * 100)}": None for q in QUANTILES}
    return {f"p{int(q * 100)}": float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES))}


def _budgets(budgets) -> list[float]:
    out = [float(b) for b in budgets]
    if not out or any(b < 0 or not np.isfinite(b) for b in out):
        raise UserError(f"got {budgets!r}; expected budgets >= 0", field="--budgets")
    return out


# ------------------------------------------------------------------------ show
def show(name: str, budgets=DEFAULT_BUDGETS, plot: str | os.PathLike | None = None) -> dict:
    """Mean accuracy at each budget, the spread of tau and the never-solved share of a set
    (overall and per dataset); with ``plot``, also write the curves as an HTML page."""
    ts = load_trace_set(name, field="NAME")
    budgets = _budgets(budgets)
    tau = true_tau(ts)
    grid = accuracy_grid(ts, budgets)
    spq = ts.samples_per_query
    out = {
        "name": ts.name,
        "meta": ts.meta,
        "n_queries": ts.n_queries,
        "samples_per_query": [int(spq.min()), int(spq.max())],
        "budgets": budgets,
        "accuracy": grid.mean(axis=0).tolist(),
        "tau": _quantiles(tau),
        "never_solved": float(np.mean(~np.isfinite(tau))),
        "solve_rate": float(solve_rate(ts).mean()),
        "datasets": {},
    }
    if ts.has_probes:  # a reasoning set: also its curve under forced answers
        out["forced_accuracy"] = accuracy_grid(ts, budgets, "forced-answer").mean(axis=0).tolist()
        out["probes"] = int(len(ts.probe_position))
    for d in ts.datasets():
        rows = ts.dataset == d
        out["datasets"][d] = {
            "n_queries": int(rows.sum()),
            "accuracy": grid[rows].mean(axis=0).tolist(),
            "tau": _quantiles(tau[rows]),
            "never_solved": float(np.mean(~np.isfinite(tau[rows]))),
        }
    if plot is not None:
        out["plot"] = str(plot_curves(ts, plot))
    return out


def plot_curves(ts: TraceSet, path: str | os.PathLike) -> Path:
    """Mean accuracy vs budget (per dataset, empirical and fitted) and the tau histogram."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError("expected an .html file name", where=str(path), field="--plot")
    top = int(max(2048, ts.sample_tokens.max(initial=0)))
    b = np.unique(np.linspace(0, top, 257).astype(int))
    fit = fit_curves(ts)
    emp, fitted = accuracy_grid(ts, b), fit.accuracy_grid(b)
    tau = true_tau(ts)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("mean accuracy at a hard cap", "true tau (solved queries)"))
    groups = [("all", np.ones(ts.n_queries, bool))] + [(d, ts.dataset == d) for d in ts.datasets()]
    if len(groups) == 2:
        groups = groups[:1]
    for k, (label, rows) in enumerate(groups):
        color = f"hsl({(k * 67) % 360},60%,45%)"
        fig.add_trace(go.Scatter(x=b, y=emp[rows].mean(0), name=f"{label} (recorded)",
                                 line=dict(color=color)), 1, 1)
        fig.add_trace(go.Scatter(x=b, y=fitted[rows].mean(0), name=f"{label} (fitted)",
                                 line=dict(color=color, dash="dot")), 1, 1)
        t = tau[rows & np.isfinite(tau)]
        fig.add_trace(go.Histogram(x=t, name=f"{label} tau", marker_color=color, opacity=0.6,
                                   showlegend=False, xbins=dict(size=64)), 1, 2)
    fig.update_layout(title=f"{ts.name}: {ts.n_queries} queries; fitted beta {fit.beta:.4g} "
                      f"({fit.beta_source}); never solved {np.mean(~np.isfinite(tau)):.1%}",
                      template="plotly_white", barmode="overlay", height=520)
    fig.update_xaxes(title_text="budget (max tokens)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="tau (tokens)", row=1, col=2)
    return write_atomic(path, lambda tmp: fig.write_html(tmp, include_plotlyjs=True,
                                                         full_html=True))


def _fmt_q(q: dict) -> str:
    if q["p50"] is None:
        return "no solved query"
    return " / ".join(f"{q[k]:.0f}" for k in ("p10", "p25", "p50", "p75", "p90"))


def format_show(d: dict) -> str:
    m = d["meta"]
    lo, hi = d["samples_per_query"]
    lines = [
        f"{d['name']}: {d['n_queries']} queries x {lo}{'' if lo == hi else '-' + str(hi)} samples",
        f"  model {m.get('model', '?')}; {m.get('decoding', '?')}",
        f"  source {m.get('source', m.get('source_file', '?'))}; licence {m.get('licence', '?')}",
        f"  never solved {d['never_solved']:.1%}; mean solve rate {d['solve_rate']:.3f}",
        f"  tau p10/p25/p50/p75/p90: {_fmt_q(d['tau'])} tokens",
        "",
    ]
    head = ["dataset", "queries", "never"] + [f"acc@{b:g}" for b in d["budgets"]]
    rows = [["all", str(d["n_queries"]), f"{d['never_solved']:.1%}"]
            + [f"{a:.3f}" for a in d["accuracy"]]]
    if len(d["datasets"]) > 1:
        for name, x in d["datasets"].items():
            rows.append([name, str(x["n_queries"]), f"{x['never_solved']:.1%}"]
                        + [f"{a:.3f}" for a in x["accuracy"]])
    if "forced_accuracy" in d:
        rows.append([f"all, forced answer ({d['probes']:,} probes)", "", ""]
                    + [f"{a:.3f}" for a in d["forced_accuracy"]])
    lines.append(_table(head, rows))
    if len(d["datasets"]) > 1:
        lines.append("")
        for name, x in d["datasets"].items():
            lines.append(f"  {name}: tau p10/p25/p50/p75/p90 {_fmt_q(x['tau'])}")
    if "plot" in d:
        lines.append(f"wrote {d['plot']}")
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


# ---------------------------------------------------------------------- import
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def import_traces(fmt: str, path: str | os.PathLike, name: str, *, tokenizer=None,
                  dataset: str | None = None, max_tokens: int | None = None,
                  model: str | None = None, decoding: str | None = None,
                  probes: str | os.PathLike | None = None,
                  targets: str | os.PathLike | None = None,
                  force: bool = False) -> Path:
    """Import a recording into ``$CLEARSIM_HOME/traces/NAME.parquet`` (all or nothing).

    ``fmt``: ``generations``, ``qwen-harness`` or ``clearsim`` (a ``.parquet`` trace file of
    ours, such as the collector's output from a GPU machine, with its ``NAME.samples.jsonl``
    sidecar when present); ``tokenizer`` (qwen-harness only) is a
    Hugging Face tokenizer name or an object with ``encode``; ``model`` and ``decoding`` are
    recorded as provenance.  ``probes`` and ``targets`` (generations only): the run's
    forced-answer probes (``probes_<model>_<dataset>.csv.gz``) and reference answers, graded
    at import with math-verify (:mod:`traces.probes`).  An existing set of that name
    (imported or embedded) is only replaced with ``force``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; allowed: {', '.join(FORMATS)}", field="FORMAT")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"got {name!r}; expected letters, digits, '.', '_', '+' or '-' "
                        "(a file name, no folders)", field="--name")
    dest = user_dir() / f"{name}.parquet"
    known = list_trace_sets()
    if name in known and not force:
        where = "embedded" if known[name].parent == embedded_dir() else "imported"
        raise UserError(f"a trace set named '{name}' exists ({where}: {known[name]}); choose "
                        "another --name or pass --force to replace (or shadow) it", field="--name")
    meta = {k: v for k, v in (("model", model), ("decoding", decoding)) if v}
    meta["imported_from"] = str(Path(path).resolve())
    if (probes is not None or targets is not None) and fmt != "generations":
        raise UserError("--probes and --targets go with the generations format",
                        field="--probes" if probes is not None else "--targets")
    if fmt == "clearsim":
        src = TraceSet.read(path)
        ts = dataclasses.replace(src, name=name, meta={**src.meta, **meta})
        sidecar = Path(path).with_name(Path(path).stem + ".samples.jsonl")
        written = ts.write(dest)
        if sidecar.is_file():
            text = sidecar.read_text(encoding="utf-8")
            write_text_atomic(dest.with_name(f"{name}.samples.jsonl"), text)
        return written
    if fmt == "generations":
        if tokenizer is not None:
            raise UserError("the generations format already holds token counts; drop --tokenizer",
                            field="--tokenizer")
        ts = import_generations(path, name, meta, probes=probes, targets=targets)
    else:
        if not Path(path).is_file():  # before loading a tokenizer (slow, maybe a download)
            raise UserError("file not found", where=str(path))
        tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        if isinstance(tokenizer, str):
            meta["tokenizer"] = tokenizer
        ts = import_qwen_harness(path, name, tok, dataset=dataset, max_tokens=max_tokens,
                                 meta=meta)
    return ts.write(dest)


# ------------------------------------------------------------------------- fit
def fit(name: str, beta: float | None = None, method: str = "mle",
        budgets=DEFAULT_BUDGETS, out: str | os.PathLike | None = None) -> dict:
    """Fit p_i, tau_i and a global beta to every query; report beta, the tau distribution and
    the fit error against the empirical curves on a budget grid.  With ``out`` (a .csv file),
    also write the per-query parameters (query_id, dataset, p, tau_fitted, tau_empirical)."""
    if out is not None and Path(out).suffix.lower() != ".csv":
        raise UserError("expected a .csv file name", where=str(out), field="--out")
    if method not in BETA_METHODS:
        raise UserError(f"got {method!r}; expected one of {', '.join(BETA_METHODS)}", field="--method")
    if beta is not None and not beta > 0:
        raise UserError(f"got {beta!r}; expected a number > 0", field="--beta")
    ts = load_trace_set(name, field="NAME")
    budgets = _budgets(budgets)
    f = fit_curves(ts, beta, method)
    err = fit_error(ts, f, budgets)
    if out is not None:
        import pandas as pd

        table = pd.DataFrame({"query_id": ts.query_id.astype(str),
                              "dataset": ts.dataset.astype(str), "p": f.p, "tau_fitted": f.tau,
                              "tau_empirical": true_tau(ts)})
        write_atomic(out, lambda tmp: table.to_csv(tmp, index=False))
    return {
        "name": ts.name,
        "n_queries": ts.n_queries,
        "beta": f.beta,
        "beta_source": f.beta_source,
        "beta_mle": fit_beta_mle(ts),
        "beta_moments": fit_beta(ts),
        "multi_correct_queries": int((np.bincount(ts.sample_query[ts.sample_correct],
                                                  minlength=ts.n_queries) >= 2).sum()),
        "solve_rate": float(f.p.mean()),
        "never_solved": float(np.mean(f.p == 0)),
        "tau_fitted": _quantiles(f.tau),
        "tau_empirical": _quantiles(true_tau(ts)),
        "budgets": budgets,
        "accuracy_empirical": accuracy_grid(ts, budgets).mean(axis=0).tolist(),
        "accuracy_fitted": f.accuracy_grid(budgets).mean(axis=0).tolist(),
        "per_query_mae": err["per_query_mae"],
        "mae": err["mae"],
        **({"out": str(out)} if out is not None else {}),
    }


def format_fit(d: dict) -> str:
    def b(v):
        return "n/a" if v is None else f"{v:.5g}"

    lines = [
        f"{d['name']}: {d['n_queries']} queries; acc_i(b) = p_i * Gamma2CDF(b - tau_i; beta)",
        f"  beta {d['beta']:.5g} ({d['beta_source']}); mle {b(d['beta_mle'])}, moments "
        f"{b(d['beta_moments'])} (from {d['multi_correct_queries']} queries with >= 2 correct "
        "samples)",
        f"  solve rate p mean {d['solve_rate']:.3f}; never solved {d['never_solved']:.1%}",
        f"  tau fitted    p10/p25/p50/p75/p90: {_fmt_q(d['tau_fitted'])}",
        f"  tau empirical p10/p25/p50/p75/p90: {_fmt_q(d['tau_empirical'])} (first correct length)",
        "",
    ]
    head = ["budget", "acc recorded", "acc fitted", "per-query MAE"]
    rows = [[f"{bb:g}", f"{e:.3f}", f"{f:.3f}", f"{m:.3f}"] for bb, e, f, m in
            zip(d["budgets"], d["accuracy_empirical"], d["accuracy_fitted"], d["per_query_mae"])]
    lines.append(_table(head, rows))
    lines.append(f"fit error (per-query MAE over the grid): {d['mae']:.4f}")
    if d["beta_source"] == "paper default":
        lines.append("note: beta is not identifiable here (no query has two correct samples, "
                     "e.g. a greedy recording); the paper's 0.005 is a placeholder: pass --beta "
                     "from a sampled recording of the same model (0.026 for the Qwen2.5-Math "
                     "MATH k=8 set)")
    if "out" in d:
        lines.append(f"wrote per-query p, tau to {d['out']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------- synth
def synth(queries: int, like: str, out: str | os.PathLike, *, seed: int = 0,
          samples: int | None = None, beta: float | None = None,
          name: str | None = None) -> Path:
    """Write a synthetic set of ``queries`` queries drawn from the fitted model of ``like``."""
    from traces.synth import synth_set

    if not (isinstance(queries, int) and queries > 0):
        raise UserError(f"got {queries!r}; expected an integer > 0", field="--queries")
    if samples is not None and not (isinstance(samples, int) and samples > 0):
        raise UserError(f"got {samples!r}; expected an integer > 0", field="--samples")
    out = Path(out)
    if out.suffix != ".parquet":
        raise UserError("expected a .parquet file name", where=str(out), field="--out")
    ts = load_trace_set(like, field="--like")
    syn = synth_set(ts, queries, seed=seed, samples=samples, beta=beta,
                    name=name or out.stem)
    return syn.write(out)


# --------------------------------------------------------------------- predict
def predict(train, test, *, ridge: float = 1.0, predictors=("prior", "learned")) -> dict:
    """Train tau predictors on ``train`` sets and evaluate them on each ``test`` set: MAE of
    log tau and Spearman rank correlation over the solved queries."""
    from traces.tau_models import evaluate, train as train_model

    if not (isinstance(ridge, (int, float)) and ridge >= 0):
        raise UserError(f"got {ridge!r}; expected a number >= 0", field="--ridge")
    train = [train] if isinstance(train, str) else list(train)
    test = [test] if isinstance(test, str) else list(test)
    if not train or not test:
        raise UserError("expected at least one training and one test set", field="--train")
    for p in predictors:
        if p not in ("prior", "learned"):
            raise UserError(f"unknown predictor '{p}'; allowed: prior, learned", field="--predictors")
    parts = [load_trace_set(n, field="--train") for n in train]
    tr = TraceSet.concat("+".join(p.name for p in parts), parts)
    tests = [load_trace_set(n, field="--test") for n in test]
    rows = []
    for kind in predictors:
        model = train_model(kind, tr, ridge=ridge)
        rows.append({"predictor": kind, "set": "(training, in-sample)", **evaluate(model, tr)})
        for ts in tests:
            rows.append({"predictor": kind, "set": ts.name, **evaluate(model, ts)})
    return {"train": [p.name for p in parts], "test": [t.name for t in tests], "rows": rows}


def format_predict(d: dict) -> str:
    head = ["set", "predictor", "solved", "MAE log tau", "bias", "Spearman"]
    rows = []
    for r in d["rows"]:
        rows.append([r["set"], r["predictor"], f"{r['n_solved']}/{r['n_queries']}",
                     "-" if r["mae_log_tau"] is None else f"{r['mae_log_tau']:.3f}",
                     "-" if r["bias_log_tau"] is None else f"{r['bias_log_tau']:+.3f}",
                     "n/a (constant)" if r["spearman"] is None else f"{r['spearman']:+.3f}"])
    rows.sort(key=lambda r: (r[0] != "(training, in-sample)", r[0], r[1]))
    return "\n".join([f"trained on {', '.join(d['train'])}", _table(head, rows),
                      "(over solved queries; bias = mean predicted minus true log tau)"])
