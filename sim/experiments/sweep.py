"""Sweeps: one base scenario run over a grid of dotted keys times seeds, resumable and on Dask.

A sweep file::

    base: default                         # shipped scenario name or path (a list: one axis)
    grid:
      budget: [100, 200, 400, 800, 1600]  # any dotted scenario key
    policies: [uniform, clear]            # optional: overrides the scenario's policies
    seeds: [0, 1, 2]
    set: {arrivals.queries: 500}          # optional: fixed overrides for every cell

A *cell* is one point of the grid; a *task* is one (cell, seed): one simulated run of every
policy.  Why the folder looks the way it does:

* ``sweep.json`` names the sweep by a fingerprint of every resolved task scenario, so a folder
  holding another sweep's results is refused before anything is touched, and ``--resume``
  knows which tasks belong to it.
* ``cells/c0003-s1-<hash>.parquet``: one file per finished task, written by the driver only,
  to a temporary name and then renamed (atomic on POSIX).  A task's file either exists whole or
  not at all, so a sweep killed at any moment (kill -9 included) resumes by running exactly the
  tasks without a file; finished tasks are never recomputed and no half-written file is read.
* ``results.parquet`` (one row per (cell, policy, seed)) and ``aggregate.parquet`` (means and
  95% t-intervals over seeds per (cell, policy)) are assembled from the cell files in a fixed
  order, so they are the same bytes whichever executor ran the tasks and in whatever order.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from scipy import stats

from sim.foundation.errors import UserError
from sim.experiments.executors import WORKER_TIMEOUT_S, Executor, open_executor, parse_executor
from sim.foundation.files import write_atomic, write_text_atomic
from sim.foundation.progress import CatchWarnings, ProgressOptions, progress_bar, reissue, say
from sim.experiments.scenario import SECTION_SPECS, scenario_spec
from sim.foundation.spec import Field, check, read_yaml, safe_load, short

MANIFEST = "sweep.json"
CELLS = "cells"
#: Identifier columns of results.parquet; every other numeric column is a metric.
ID_COLUMNS = ("cell", "seed", "policy", "scenario")
#: Scenario values recorded on every row (beside the grid's own keys).
STANDARD_KEYS = ("budget", "arrivals.rate", "arrivals.queries", "engine.replicas")
#: Quantile levels of the per-row e2e latency distribution kept for the report's CDFs.
CDF_LEVELS = np.linspace(0, 100, 101)


def _list_check(v) -> str | None:
    return None if v else "expected a non-empty list"


def _seeds_check(v) -> str | None:
    if not v or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v):
        return "expected a non-empty list of integers >= 0"
    if len(set(v)) != len(v):
        return "seeds must be distinct"
    return None


SWEEP_SPEC = {
    "name": Field((str,), None, "sweep name (default: the file name)", nullable=True),
    "description": Field((str,), "", "what the sweep is for"),
    "base": Field((str, list), doc="base scenario: a shipped name or a path (relative to the "
                  "sweep file); a list makes it a grid axis"),
    "grid": Field((dict,), None, "dotted scenario key -> list of values; the cells are their "
                  "cartesian product", nullable=True),
    "policies": Field((list,), None, "policies to run (names or labels of the scenario's, or "
                      "{name, label, params}); default: the scenario's", nullable=True,
                      check=_list_check),
    "seeds": Field((list,), [0], "seeds run in every cell", check=_seeds_check),
    "set": Field((dict,), None, "dotted scenario key -> value, applied to every cell",
                 nullable=True),
}


def sweeps_dir() -> Path:
    from sim.experiments.scenario import scenarios_dir

    return scenarios_dir() / "sweeps"


def shipped_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def find_file(name_or_path: str, folder: Path, kind: str) -> Path:
    """A YAML file by path, or by shipped name in ``folder`` (with a "did you mean")."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError(f"{kind} file not found", where=str(p))
        return p
    shipped = sorted(q.stem for q in folder.glob("*.yaml"))
    if (folder / f"{name_or_path}.yaml").is_file():
        return folder / f"{name_or_path}.yaml"
    close = difflib.get_close_matches(name_or_path, shipped, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown {kind} '{name_or_path}'; {hint}shipped: {', '.join(shipped) or 'none'}"
                    ", or give a path to a .yaml file")


def scenario_keys() -> dict[str, Field]:
    """Every dotted key a grid or ``--set`` may name (sections and their fields)."""
    keys = {}
    for key, fld in scenario_spec().items():
        keys[key] = fld
        if key in SECTION_SPECS:
            keys.update({f"{key}.{k}": f for k, f in SECTION_SPECS[key]().items()})
    return keys


def check_key(key: str, *, where: str | None, field_path: str) -> None:
    """Refuse a dotted key that names no scenario field, suggesting the closest one.

    Keys inside a free-form mapping field (``traces.mix.math``) are allowed.
    """
    keys = scenario_keys()
    if key in keys:
        return
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        fld = keys.get(".".join(parts[:n]))
        if fld is not None and dict in fld.types and ".".join(parts[:n]) not in SECTION_SPECS:
            return
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"'{key}' is not a scenario key; {hint}see 'clearsim scenarios --fields'",
                    where=where, field=field_path)


def base_path(base: str, sweep_file: Path | None) -> str:
    """A base scenario named in a sweep or plan file: relative paths are the file's own."""
    if sweep_file is not None and (base.endswith((".yaml", ".yml")) or "/" in base):
        rel = sweep_file.parent / base
        if rel.is_file():
            return str(rel)
    return base


@dataclass
class Task:
    cell: int
    seed: int
    values: dict  # the cell's grid values, by key
    scenario: dict  # fully resolved, seed included
    digest: str

    @property
    def filename(self) -> str:
        return f"c{self.cell:04d}-s{self.seed}-{self.digest}.parquet"


@dataclass
class Sweep:
    name: str
    where: str | None
    keys: list[str]  # grid keys, in order ("base" first when the base is a list)
    cells: list[dict]
    seeds: list[int]
    tasks: list[Task]
    policies: list[str] = field(default_factory=list)  # labels, in run order
    spec: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return _digest([t.scenario for t in self.tasks], 16)


def _digest(obj, n: int) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def parse_overrides(items: list[str] | None) -> dict:
    """``["engine.replicas=4", ...]`` (``--set``) to a dict; values are parsed as YAML."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE (a dotted scenario key), got '{item}'")
        check_key(key, where="--set", field_path=key)
        try:
            out[key] = safe_load(value)
        except (yaml.YAMLError, RecursionError):
            raise UserError(f"--set {key}: value {short(value)} is not valid YAML") from None
    return out


def load_sweep(name_or_path: str | dict, overrides: dict | None = None) -> Sweep:
    """Load and validate a sweep file and resolve every task's scenario (nothing runs).

    Every cell is resolved up front so that a bad grid value fails before any work is done.
    ``overrides`` (``--set``) apply to every cell, under the grid's values.
    """
    from sim.experiments.runner import engine_config, resolve

    if isinstance(name_or_path, dict):
        raw, path, where = name_or_path, None, None
        name_default = "sweep"
    else:
        path = find_file(name_or_path, sweeps_dir(), "sweep")
        raw, where, name_default = read_yaml(path, "sweep"), str(path), path.stem
    spec = check(raw, SWEEP_SPEC, where=where)
    grid = dict(spec["grid"] or {})
    for key, values in grid.items():
        if key in ("seed", "base"):
            raise UserError(f"'{key}' cannot be a grid key; use the sweep's "
                            f"'{'seeds' if key == 'seed' else 'base'}' list", where=where,
                            field=f"grid.{key}")
        check_key(str(key), where=where, field_path=f"grid.{key}")
        if not isinstance(values, list) or not values:
            raise UserError("expected a non-empty list of values", where=where, field=f"grid.{key}")
    fixed = dict(spec["set"] or {})
    for key in fixed:
        check_key(str(key), where=where, field_path=f"set.{key}")
    for key in overrides or {}:
        check_key(key, where="--set", field_path=key)
    bases = spec["base"] if isinstance(spec["base"], list) else [spec["base"]]
    if not bases or not all(isinstance(b, str) and b for b in bases):
        raise UserError("expected a scenario name or path, or a list of them", where=where, field="base")
    keys = (["base"] if isinstance(spec["base"], list) else []) + list(grid)
    axes = ([bases] if isinstance(spec["base"], list) else []) + list(grid.values())
    cells = [dict(zip(keys, combo)) for combo in itertools.product(*axes)]
    tasks, labels = [], {}
    for c, values in enumerate(cells):
        base = values.get("base", bases[0])
        ov = {**fixed, **(overrides or {}), **{k: v for k, v in values.items() if k != "base"}}
        for seed in spec["seeds"]:
            try:
                sc = resolve(base_path(base, path), seed=seed, policies=spec["policies"], overrides=ov)
                engine_config(sc["engine"], None)  # as `validate` does: flags vLLM would refuse
            except UserError as exc:
                shown = ", ".join(f"{k}={v}" for k, v in values.items())
                raise UserError(f"cell {shown}: {exc}", where=where) from None
            tasks.append(Task(c, seed, values, sc, _digest(sc, 10)))
            labels.update(dict.fromkeys(p["label"] for p in sc["policies"]))  # union, in order
    name = spec["name"] or name_default
    return Sweep(name, where, keys, cells, list(spec["seeds"]), tasks, list(labels), spec)


# ---------------------------------------------------------------------------------------------
# One task: simulate and flatten the summary into rows (runs in a worker, must be picklable).

def _scalar(v):
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return v


def _get(sc: dict, dotted: str):
    node = sc
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def flatten(d: dict, prefix: str = "") -> dict:
    """Summary metrics as flat columns: ``{"e2el_ms": {"p99": x}}`` -> ``e2el_ms_p99``.

    None becomes NaN (a number column stays numeric); anything that is not a number, a string
    or a bool (a list) is stored as JSON, so a new metric never breaks the table.
    """
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}_"))
        elif v is None:
            out[name] = np.nan
        elif isinstance(v, (bool, int, float, str, np.number, np.bool_)):
            out[name] = v
        else:
            out[name] = json.dumps(v, sort_keys=True, default=str)
    return out


def run_task(task: Task) -> pd.DataFrame:
    """Simulate one (cell, seed): one row per policy with every summary metric, flattened."""
    from sim.experiments.runner import simulate

    res = simulate(task.scenario)
    q = res.queries
    rows = []
    for r in res.summary["results"]:
        row = {"cell": task.cell, "seed": task.seed, "policy": r["policy"],
               "scenario": task.scenario["name"]}
        for k, v in task.values.items():
            row[k] = _scalar(v)
        for k in STANDARD_KEYS:
            row.setdefault(k, _get(task.scenario, k))
        row.update(flatten({k: v for k, v in r.items() if k != "policy"}))
        mine = q[q["policy"] == r["policy"]]
        served = ~mine["abandoned"].to_numpy()
        e2e = (mine["finish_s"].to_numpy() - mine["arrival_s"].to_numpy())[served]
        e2e = e2e[np.isfinite(e2e)]
        row["e2el_quantiles_ms"] = (np.percentile(e2e, CDF_LEVELS) * 1000).tolist() if len(e2e) else []
        by_ds = mine.groupby("dataset", sort=True)["budget"].mean()
        row["budget_by_dataset"] = json.dumps({str(k): float(v) for k, v in by_ds.items()},
                                              sort_keys=True)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TaskFailure:
    """What :func:`run_task_safe` returns for a task whose simulation raised: the one-line
    message (picklable, so it travels back from any executor like a result)."""

    message: str


def run_task_safe(task: Task) -> pd.DataFrame | TaskFailure:
    """:func:`run_task`, with a failure of this one task (a value that passes every check but
    fails in the simulation) returned instead of raised: the other tasks go on and are saved."""
    try:
        return run_task(task)
    except UserError as exc:
        return TaskFailure(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported per task, in one line, exit 2
        return TaskFailure(" ".join(f"{exc.__class__.__name__}: {short(str(exc))}".split()))


# ---------------------------------------------------------------------------------------------
# Files: atomic writes and the output folder's identity.

def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    write_atomic(path, lambda p: pq.write_table(table, p, compression="zstd"), fsync=True)


def manifest(sw: Sweep) -> dict:
    return {"kind": "clearsim-sweep", "name": sw.name, "fingerprint": sw.fingerprint,
            "keys": sw.keys, "seeds": sw.seeds, "policies": sw.policies,
            "n_cells": len(sw.cells), "n_tasks": len(sw.tasks), "spec": sw.spec}


def check_out_dir(out: Path, sw: Sweep, resume: bool) -> bool:
    """Decide whether ``out`` may receive this sweep; True when it already holds it."""
    from sim.experiments.outdirs import check_out_dir as check_writable

    if not out.exists():
        if resume:
            raise UserError("--resume: no such sweep folder; run without --resume to start it",
                            where=str(out))
        check_writable(out)
        return False
    check_writable(out, allow_existing=True)
    if not out.is_dir():
        raise UserError("output path exists and is not a folder", where=str(out))
    if not any(out.iterdir()):
        return False
    m = out / MANIFEST
    if not m.is_file():
        raise UserError("output folder is not empty and holds no sweep; choose another --out",
                        where=str(out))
    try:
        old = json.loads(m.read_text())
    except (OSError, ValueError):
        raise UserError(f"unreadable {MANIFEST}; choose another --out", where=str(out)) from None
    if old.get("fingerprint") != sw.fingerprint:
        raise UserError(f"output folder holds another sweep's results ('{old.get('name')}', "
                        f"fingerprint {old.get('fingerprint')}, not {sw.fingerprint}); choose "
                        "another --out", where=str(out))
    if not resume:
        raise UserError("output folder holds this sweep already; pass --resume to finish it "
                        "(finished cells are kept)", where=str(out))
    return True


FAILED = "failed.json"


def report_failures(out: Path, sw: Sweep, failed: list[tuple[Task, str]], ran: int) -> None:
    """Record the tasks that failed in ``DIR/failed.json`` and raise one line about them; with
    none, remove a ``failed.json`` an earlier attempt left.  The finished tasks stay saved."""
    if not failed:
        (out / FAILED).unlink(missing_ok=True)
        return
    failed = sorted(failed, key=lambda f: (f[0].cell, f[0].seed))
    rows = [{"cell": t.cell, "seed": t.seed, "values": {k: _scalar(v) for k, v in t.values.items()},
             "error": msg} for t, msg in failed]
    write_text_atomic(out / FAILED, json.dumps(rows, indent=2, default=str) + "\n", fsync=True)
    task, msg = failed[0]
    shown = ", ".join(f"{k}={short(v)}" for k, v in task.values.items()) or "the only cell"
    raise UserError(f"{len(failed)} of {ran} tasks failed, first cell {task.cell} ({shown}) seed "
                    f"{task.seed}: {msg} | finished tasks ({ran - len(failed)} now) are saved in "
                    f"{out / CELLS}, --resume runs only the rest; every failure is listed in "
                    f"{out / FAILED}", where=sw.where)


def done_tasks(out: Path, sw: Sweep) -> set[str]:
    """File names of finished tasks (only complete files ever carry a final name)."""
    names = {t.filename for t in sw.tasks}
    cells = out / CELLS
    return {p.name for p in cells.glob("*.parquet")} & names if cells.is_dir() else set()


# ---------------------------------------------------------------------------------------------
# Assembling the tables.

def metric_columns(df: pd.DataFrame, keys: list[str]) -> list[str]:
    skip = set(ID_COLUMNS) | set(keys) | set(STANDARD_KEYS)
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]


def aggregate(results: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (cell, policy): mean, and a 95% Student-t interval over seeds, of every metric.

    With n seeds the half-width is t(0.975, n-1) * sd / sqrt(n); one seed gives no interval (NaN).
    """
    metrics = metric_columns(results, keys)
    id_cols = ["cell", "policy", "scenario"] + [k for k in list(keys) + list(STANDARD_KEYS)
                                                if k in results.columns and k not in ("cell",)]
    id_cols = list(dict.fromkeys(id_cols))
    out = []
    order = {p: i for i, p in enumerate(dict.fromkeys(results["policy"]))}
    for _, g in results.groupby(["cell", "policy"], sort=False):
        row = {c: g[c].iloc[0] for c in id_cols}
        n = len(g)
        row["n_seeds"] = n
        for m in metrics:
            x = g[m].to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if len(x) else np.nan
            if len(x) >= 2:
                half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
            else:
                half = np.nan
            row[f"{m}_mean"] = mean
            row[f"{m}_ci_lo"] = mean - half
            row[f"{m}_ci_hi"] = mean + half
        out.append(row)
    agg = pd.DataFrame(out)
    agg["_o"] = agg["policy"].map(order)
    return agg.sort_values(["cell", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def assemble(out: Path, sw: Sweep) -> pd.DataFrame:
    """results.parquet from the task files in (cell, seed, policy) order: executor-independent."""
    from sim.experiments.folders import RESULT_COLUMNS, read_parquet  # a damaged task file: one line

    fix = "remove it and run again with --resume to recompute that task"
    frames = [read_parquet(out / CELLS / t.filename, RESULT_COLUMNS, fix=fix) for t in sw.tasks]
    df = pd.concat(frames, ignore_index=True)
    order = {p: i for i, p in enumerate(sw.policies)}
    df["_o"] = df["policy"].map(order)
    return df.sort_values(["cell", "seed", "_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


@dataclass
class SweepResult:
    sweep: Sweep
    out_dir: Path
    results: pd.DataFrame
    aggregate: pd.DataFrame
    ran: int  # tasks run now (the others were already done)


def default_sweep_dir(name: str) -> Path:
    from sim.experiments.outdirs import safe_name

    return Path("sweeps") / safe_name(name, "sweep")


def sweep(sweep_file: str | dict, *, out: str | os.PathLike | None = None,
          executor: str | Executor = "local",
          resume: bool = False, overrides: dict | None = None, connect_timeout: float = 10.0,
          worker_timeout: float = WORKER_TIMEOUT_S, report: bool = True,
          progress: bool | None | ProgressOptions = None) -> SweepResult:
    """``clearsim sweep``: run every (cell, seed) of a sweep and write DIR's tables and report.

    ``executor`` is a spec (``local``, ``processes:2``, ``dask-local``, ``dask://HOST:PORT``) or
    an open :class:`~sim.experiments.executors.Executor` to reuse (say, one Dask client for many sweeps).
    Validation (the sweep, every cell's scenario, the executor, the output folder, reaching a
    Dask scheduler and finding a worker on it within ``worker_timeout`` seconds) all happens
    before anything is written, so bad input touches nothing.

    ``progress``: ``None``/``True`` shows it on stderr (a bar on a terminal, a line every
    10 s or 10% of the tasks otherwise), ``False`` hides it, a
    :class:`~sim.foundation.progress.ProgressOptions` picks the stream and pace (:mod:`sim.foundation.progress`).
    Warnings raised in a task, wherever it ran, are shown once each, never inside the bar.
    """
    own = not isinstance(executor, Executor)  # an Executor object is the caller's to close
    spec = parse_executor(executor) if own else None
    sw = load_sweep(sweep_file, overrides)
    out = Path(out) if out is not None else default_sweep_dir(sw.name)
    check_out_dir(out, sw, resume)
    notify = lambda text: say(progress, text)  # noqa: E731 - executor notices (Dask dashboard)
    with open_executor(spec, connect_timeout, worker_timeout, notify) if own \
            else nullcontext(executor) as ex:
        out.mkdir(parents=True, exist_ok=True)
        if not (out / MANIFEST).is_file():  # first, so a folder with cells always names its sweep
            write_text_atomic(out / MANIFEST,
                              json.dumps(manifest(sw), indent=2, default=str) + "\n", fsync=True)
        (out / CELLS).mkdir(exist_ok=True)
        for stale in (out / CELLS).glob(".*.tmp"):  # a killed run's unfinished temp files
            stale.unlink(missing_ok=True)
        done = done_tasks(out, sw)
        todo = [t for t in sw.tasks if t.filename not in done]
        failed: list[tuple[Task, str]] = []
        seen: set = set()  # warnings already shown (each once per sweep)
        with progress_bar(len(sw.tasks), done=len(sw.tasks) - len(todo), desc=f"sweep {sw.name}",
                          noun="task", progress=progress) as bar:
            for task, (frame, caught) in ex.map_unordered(CatchWarnings(run_task_safe), todo):
                reissue(caught, seen)
                if isinstance(frame, TaskFailure):
                    failed.append((task, frame.message))
                else:
                    write_parquet_atomic(frame, out / CELLS / task.filename)
                bar.update(1)
    report_failures(out, sw, failed, len(todo))
    results = assemble(out, sw)
    agg = aggregate(results, sw.keys)
    write_parquet_atomic(results, out / "results.parquet")
    write_parquet_atomic(agg, out / "aggregate.parquet")
    if report:
        from sim.experiments.report import write_report

        write_report(out)
    return SweepResult(sw, out, results, agg, len(todo))


__all__ = ["sweep", "load_sweep", "run_task", "run_task_safe", "aggregate", "parse_overrides",
           "SweepResult", "TaskFailure"]
