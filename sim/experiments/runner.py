"""Run a scenario: one workload replayed against each policy, results in memory and on disk.

``run("default")`` is what ``clearsim run`` does; :func:`simulate` is the same without writing
anything.  Every policy sees the same arrivals, hidden outcomes and predictions (the workload is
drawn once), and gets a fresh SimPy environment and fresh replicas.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import simpy
import yaml

from policies.base import REGISTRY, RunContext
from policies.budget import per_query_budget, utilisation_token_rate
from policies.training import training_split
from policies.truth import TrueCurves
from sim.core.allocation import (DecisionClock, Decisions, allocation_process, decide_ahead,
                                 decision_groups)
from sim.core.early_exit import ExitLog, record_exits
from sim.core.engine import EngineConfig, Recorder, Replica, Router, sample_timeseries
from sim.foundation.errors import UserError
from sim.foundation.files import terminate_raises, write_dir_atomic
from sim.experiments.outdirs import PARTIAL, check_out_dir, clean_stale, safe_name
from sim.foundation.spec import safe_load
from sim.core.metrics import summarise
from sim.experiments.scenario import load_scenario, resolve_scenario_path
from sim.core.workload import Workload, build_workload
from traces.curves import PAPER_BETA, fit_beta
from traces.registry import load_trace_set
from traces.schema import TraceSet


@dataclass
class RunResult:
    scenario: dict  # fully resolved
    summary: dict  # {"scenario", "seed", "results": [...]}
    queries: pd.DataFrame  # one row per (policy, query)
    out_dir: Path | None = None
    #: running / waiting / KV use per (policy, replica), sampled every engine.timeseries_s
    timeseries: pd.DataFrame | None = None

    def table(self) -> str:
        return format_table(self.summary["results"])


def engine_config(eng: dict, where: str | None = None) -> EngineConfig:
    """The engine section of a resolved scenario, preset values filled in
    (:func:`sim.core.presets.engine_config`)."""
    from sim.core.presets import engine_config as build

    return build(eng, where)


def load_traces(sc: dict, where: str | None = None) -> TraceSet:
    parts = [load_trace_set(s, where=where, field="traces.sets") for s in sc["traces"]["sets"]]
    return TraceSet.concat("+".join(p.name for p in parts), parts)


def simulate_policy(policy, wl: Workload, cfg: EngineConfig, target: float,
                    timeseries: list | None = None, interval_s: float = 1.0,
                    semantics: str | None = None, where: str | None = None) -> tuple[pd.DataFrame, float]:
    """One policy against the workload: its rows of queries.parquet and GPU busy seconds
    (and, if ``timeseries`` is a list, its engine time series appended as a DataFrame).
    ``semantics`` (``traces.semantics``; None = the workload's) is how a policy's early exit
    scores a capped run."""
    n = wl.n
    env = simpy.Environment()
    rec = Recorder(n)
    dec = Decisions.empty(n)
    gen = np.zeros(n, dtype=np.int64)
    static = cfg.replicas == 1 or cfg.routing != "least-loaded"
    ahead = not policy.wants_feedback and static
    replicas: list[Replica] = []
    router = Router(replicas, cfg.routing)
    groups = None
    if ahead:
        # Decided ahead, every request is fed before the run and nothing else can reach a
        # replica: each replica serves its whole schedule without SimPy (Replica.run_ahead).
        clock = None
    else:
        # Replicas compute ahead up to the next allocation decision that could reach them.
        if not static or cfg.replicas == 1:
            clock = DecisionClock()  # every replica stops at every decision
        elif policy.timing.kind == "immediate":  # one decision per arrival, at its time
            clock = DecisionClock(wl.arrival_s, np.ones(n, dtype=np.int64), router, cfg.replicas)
        else:
            groups = decision_groups(policy.timing, wl.arrival_s)
            clock = DecisionClock([t for t, _ in groups], [len(g) for _, g in groups], router,
                                  cfg.replicas)
    replicas.extend(Replica(env, cfg, wl.prompt_tokens, gen, rec, r, ahead=ahead,
                            external=None if ahead else clock.for_replica(r))
                    for r in range(cfg.replicas))
    exits = None if policy.exit_rule is None else ExitLog(wl, policy.exit_rule,
                                                          semantics or wl.semantics, where)
    if ahead:  # decisions depend on the arrivals only: make them all now, route them at once
        funded, at_s = decide_ahead(policy, wl, target, dec, gen, exits)
        router.dispatch_ahead(funded, at_s)
        for r in replicas:
            r.run_ahead()
    else:
        env.process(allocation_process(env, policy, wl, target, router.dispatch, dec, gen, rec,
                                       exits, clock, groups))
    env.run()
    rec.flush()  # completions after the last decision (the policy's account ends complete)
    budget = dec.budget
    needed = wl.tokens_needed
    abandoned = budget == 0
    rows = pd.DataFrame({
        "policy": policy.label,
        "query_id": wl.query_id.astype(str),
        "dataset": wl.dataset.astype(str),
        "arrival_s": wl.arrival_s,
        "decision_s": dec.decision_s,
        "scheduled_s": rec.scheduled_s,
        "first_token_s": rec.first_token_s,
        "finish_s": rec.finish_s,
        "prompt_tokens": wl.prompt_tokens,
        "budget": budget,
        "tokens_needed": needed,
        "tokens_generated": gen,
        "correct": wl.outcome(budget)[0] & ~abandoned,
        "expected_accuracy": wl.expected_accuracy(budget),
        "abandoned": abandoned,
        "tau_true": wl.tau_true,
        "tau_pred": wl.tau_pred,
        "shadow_price": dec.shadow_price,
        "replica": rec.replica,
        "preemptions": rec.preemptions,
    })
    record_exits(rows, exits, budget)
    if timeseries is not None:
        ts = pd.DataFrame(sample_timeseries(replicas, interval_s))
        ts.insert(0, "policy", policy.label)
        ts["kv_use"] = ts["kv_blocks"] / cfg.kv_blocks if cfg.kv_blocks else 0.0
        timeseries.append(ts)
    return rows, sum(r.busy_s for r in replicas)


def simulate(scenario: str | dict = "default", **overrides) -> RunResult:
    """Run a scenario in memory, writing nothing.

    ``scenario`` is a shipped name, a YAML path (with the overrides of :func:`run`) or an
    already resolved scenario dict (see :func:`resolve`).
    """
    if isinstance(scenario, dict):
        if overrides:
            raise TypeError("overrides apply to a scenario name or path, not a resolved dict")
        sc, where = scenario, None
    else:
        sc = resolve(scenario, **overrides)
        where = str(resolve_scenario_path(scenario))
    ts = load_traces(sc, where)
    check_exit_policies(sc, ts, where)
    wl = build_workload(
        ts,
        n_queries=sc["arrivals"]["queries"],
        rate=sc["arrivals"]["rate"],
        mix=sc["traces"]["mix"],
        predictor=sc["predictor"],
        seed=sc["seed"],
        where=where,
        spec=sc["traces"],
        arrivals=sc["arrivals"],
    )
    cfg = engine_config(sc["engine"], where)
    token_rate = None
    if sc.get("budget_utilisation") is not None:  # budget as a token rate (policies.budget)
        token_rate = utilisation_token_rate(cfg, sc["budget_utilisation"])
        sc = {**sc, "budget": per_query_budget(token_rate, wl.arrival_s)}  # caller's dict intact
    ctx = RunContext(
        target_tokens_per_query=sc["budget"],
        fitted_beta=fit_beta(ts) or PAPER_BETA,
        n_queries=wl.n,
        token_rate=token_rate,
    )
    frames, results, series = [], [], []
    for spec in sc["policies"]:
        params = {k: v for k, v in spec.items() if k not in ("name", "label")}
        policy = REGISTRY[spec["name"]](params, policy_context(REGISTRY[spec["name"]], ctx, wl, sc),
                                        spec["label"])
        rows, busy = simulate_policy(policy, wl, cfg, sc["budget"], series,
                                     sc["engine"]["timeseries_s"], where=where)
        frames.append(rows)
        results.append(summarise(rows, gpu_busy_s=busy, replicas=cfg.replicas, slo=sc.get("slo")))
    summary = {
        "scenario": sc["name"],
        "seed": sc["seed"],
        "budget": sc["budget"],
        "fitted_beta": ctx.fitted_beta,
        "results": results,
    }
    return RunResult(sc, summary, pd.concat(frames, ignore_index=True),
                     timeseries=pd.concat(series, ignore_index=True))


def validate(scenario: str = "default", *, overrides: dict | None = None) -> dict:
    """``clearsim validate``: check a scenario without simulating it; return it resolved.

    Beyond the fields (:func:`resolve`), this loads its trace sets and draws a short workload
    (arrivals, traffic mix or stream, outcomes, predictions) and builds the engine, so every
    reference a run would follow is checked, and nothing is written.
    """
    sc = resolve(scenario, overrides=overrides)
    where = str(resolve_scenario_path(scenario))
    ts = load_traces(sc, where)
    build_workload(ts, n_queries=min(sc["arrivals"]["queries"], 50),
                   rate=sc["arrivals"]["rate"], mix=sc["traces"]["mix"],
                   predictor=sc["predictor"], seed=sc["seed"], where=where, spec=sc["traces"],
                   arrivals=sc["arrivals"])
    engine_config(sc["engine"], where)
    check_exit_policies(sc, ts, where)
    return sc


def check_exit_policies(sc: dict, ts: TraceSet, where: str | None = None) -> None:
    """Policies with an exit rule need recorded probes and recorded outcomes."""
    from sim.core.early_exit import Probes

    for k, spec in enumerate(sc["policies"]):
        if REGISTRY[spec["name"]].exit_rule is None:  # the family defines it as a property
            continue
        Probes.of(ts, where, f"policies[{k}].name")
        if sc["traces"].get("outcomes") == "fitted":
            raise UserError("early exit replays recorded probes; set traces.outcomes: empirical",
                            where=where, field="traces.outcomes")


def policy_context(cls, ctx: RunContext, wl: Workload, sc: dict) -> RunContext:
    """The context one policy gets: the true curves only for ``sees_true_curves`` (the oracle
    bound), a training split only for ``needs_training``; nothing else differs."""
    extra = {}
    if cls.sees_true_curves:
        extra["true_curves"] = TrueCurves(wl.traces, getattr(wl, "curves", None))
    if cls.needs_training:
        extra["training"] = training_split(wl.traces, sc["predictor"], sc["seed"])
    return dataclasses.replace(ctx, **extra) if extra else ctx


def _select_policies(raw: list, names: list[str]) -> list:
    """Keep the scenario's entries matching ``names`` (by label or name); add unknown ones."""
    chosen = []
    for name in names:
        hits = [p for p in raw if (p if isinstance(p, str) else p.get("label", p.get("name"))) == name]
        hits = hits or [p for p in raw if (p if isinstance(p, str) else p.get("name")) == name]
        chosen.extend(hits or [name])
    return chosen


def resolve(scenario: str = "default", *, seed: int | None = None, policies=None,
            budget: float | None = None, rate: float | None = None,
            queries: int | None = None, overrides: dict | None = None) -> dict:
    """Load a scenario by name or path and apply the command-line style overrides.

    ``overrides`` maps dotted keys to values (``{"engine.replicas": 4}``, what ``--set`` gives);
    the named keyword arguments win over it.
    """
    path = resolve_scenario_path(scenario)
    ov: dict[str, object] = dict(overrides or {})
    if seed is not None:
        ov["seed"] = seed
    if budget is not None:
        ov["budget"] = budget
    if rate is not None:
        ov["arrivals.rate"] = rate
    if queries is not None:
        ov["arrivals.queries"] = queries
    if policies is not None:
        names = policies.split(",") if isinstance(policies, str) else list(policies)
        names = [n.strip() if isinstance(n, str) else n for n in names]
        if not names or not all(names):
            raise UserError(f"got {str(policies)[:60]!r}; expected comma-separated policy names "
                            "or labels", field="--policies")
        try:
            raw = safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError, UnicodeDecodeError, RecursionError):
            raw = None  # load_scenario below reports it
        base = raw.get("policies", []) if isinstance(raw, dict) else []
        ov["policies"] = _select_policies(base if isinstance(base, list) else [], names)
    return load_scenario(str(path), ov)


def default_out_dir(name: str) -> Path:
    return Path("runs") / f"{safe_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, compression="zstd")


def write_run(result: RunResult, out: str | os.PathLike, report: bool = True) -> Path:
    """Write queries.parquet, summary.json, bench.json, scenario.yaml (and report.html) into ``out``,
    all or nothing."""
    out = check_out_dir(out)
    with terminate_raises():  # a SIGTERM while writing still removes the .partial folder
        _write_run_folder(result, out, report)
    result.out_dir = out
    return out


def _write_run_folder(result: RunResult, out: Path, report: bool) -> None:
    def write(tmp: Path) -> None:
        _write_parquet(result.queries, tmp / "queries.parquet")
        if result.timeseries is not None:
            _write_parquet(result.timeseries, tmp / "timeseries.parquet")
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2, sort_keys=True) + "\n")
        from sim.experiments.vllm_bench import bench_by_policy  # vllm bench serve's layout, per policy
        (tmp / "bench.json").write_text(json.dumps(bench_by_policy(result.queries), indent=2,
                                                   sort_keys=True) + "\n")
        (tmp / "scenario.yaml").write_text(yaml.safe_dump(result.scenario, sort_keys=False))
        if report:  # inside the temp folder, so the rename publishes it with the rest
            from sim.experiments.report import write_report
            write_report(tmp, queries=result.queries, summary=result.summary)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent)  # .partial folders of killed runs
    except OSError as exc:
        raise UserError(f"cannot create the output folder ({exc.strerror})", where=str(out)) from None
    try:
        write_dir_atomic(out, write, suffix=PARTIAL)
    except OSError as exc:
        raise UserError(f"cannot write the run folder ({exc.strerror or exc})",
                        where=str(out)) from None


def run(scenario: str = "default", *, out: str | os.PathLike | None = None, seed: int | None = None,
        policies=None, budget: float | None = None, rate: float | None = None,
        queries: int | None = None, overrides: dict | None = None, report: bool = True) -> RunResult:
    """``clearsim run``: simulate a scenario and write its run folder.

    ``overrides`` sets any dotted scenario key (``--set engine.replicas=4``); ``report`` also
    writes the interactive ``report.html`` into the folder.

    ``scenario`` is a shipped name (``default``) or a YAML path; the keyword arguments override
    the scenario's seed, policies (names or labels, a list or comma-separated), budget (mean
    tokens per query), arrival rate (queries per second) and number of queries.
    """
    check_out_dir(out if out is not None else default_out_dir("probe"))  # before simulating
    result = simulate(scenario, seed=seed, policies=policies, budget=budget, rate=rate,
                      queries=queries, overrides=overrides)
    write_run(result, out if out is not None else default_out_dir(result.scenario["name"]),
              report=report)
    return result


def _fmt(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


def format_table(results: list[dict]) -> str:
    """The comparison table ``clearsim run`` prints."""
    head = ["policy", "accuracy", "exp.acc", "tokens/q", "abandon", "e2e p50 s", "e2e p99 s",
            "wait p99 s", "GPU busy", "batch"]
    rows = []
    for r in results:
        rows.append([
            r["policy"],
            f"{r['accuracy']:.3f}",
            f"{r['expected_accuracy']:.3f}",
            _fmt(r["tokens_per_query"]),
            f"{r['abandon_rate']:.1%}",
            _fmt(None if r["e2el_ms"]["median"] is None else r["e2el_ms"]["median"] / 1000, 2),
            _fmt(None if r["e2el_ms"]["p99"] is None else r["e2el_ms"]["p99"] / 1000, 2),
            _fmt(None if r["queue_wait_ms"]["p99"] is None else r["queue_wait_ms"]["p99"] / 1000, 2),
            f"{r['gpu_utilisation']:.0%}",
            f"{r['mean_running']:.0f}",
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt_row = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])
