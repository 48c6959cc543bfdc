"""Calibration against a recorded vLLM run: replay its exact arrivals and lengths through the
engine with the run's flags, fit the linear step model, and compare latencies.

A run folder has the layout of ``shared/data/serving/vllm_runs/*`` (LLMServingSim's bench):
``requests.jsonl`` (per request: input/output tokens, ``queued_ts`` when the engine got it,
``scheduled_ts``, ``first_token_ts``, ``last_token_ts``), ``timeseries.csv`` (running, waiting,
prompt and generation throughput per second) and ``meta.json`` (engine flags, KV blocks when
recorded).  Latencies use that bench's definitions: TTFT and E2E from ``queued_ts``, TPOT =
(last - first) / (output tokens - 1).

The fit has two stages:

1. A per-request regression of decode times (:mod:`sim.experiments.decode_regression`): a
   request's ``last - first`` token time spans ``output - 1`` engine steps, so it is ``c0 *
   (output - 1) + c1 * prompt tokens prefilled meanwhile + c2 * decoding-sequence-steps
   meanwhile``, both counts rebuilt from the other requests' timestamps; NNLS over every usable
   request (of every fit run at once), a physical starting point that sees the batch vary
   within a run.  Constant client-side latencies cancel.  A run with fewer than 10 usable
   requests, or a KV-bound one (its replay with its own regression fit preempts: preempted
   requests' windows hold waits the regression would read as steps), falls back to NNLS on its
   per-second ``timeseries.csv`` (each busy second ``c0 * steps + c1 * prompt tokens + c2 *
   generated tokens``), then to a generic guess.
2. Nelder-Mead on ``log(c0, c1, c2)`` minimising the squared log errors of the simulated TTFT,
   TPOT and E2E (mean and median, E2E p90) against the recording, each candidate being a full
   replay through the engine: the coefficients that make *this engine* reproduce the run (the
   way BLIS fits its blackbox coefficients against real measurements).

The result is in-sample by construction; :func:`cross_check` applies one run's fit to another
run of the same GPU and model to say how well it transfers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy
from scipy.optimize import minimize, nnls

from sim.core.engine import EngineConfig, Recorder, Replica, Router
from sim.foundation.errors import UserError
from sim.experiments.decode_regression import decode_design, fit_design
from sim.experiments.kv_infer import infer_kv_blocks
from sim.experiments.recorded import read_recorded
from sim.core.stepmodels import LinearStepModel

METRICS = ("ttft", "tpot", "e2e")
STATS = ("mean", "median", "p90")
#: What the fit matches (metric, statistic): the calibration target and its neighbours.
FIT_ON = (("ttft", "mean"), ("ttft", "median"), ("tpot", "mean"), ("tpot", "median"),
          ("e2e", "mean"), ("e2e", "median"), ("e2e", "p90"))


@dataclass
class RecordedRun:
    name: str
    arrival_s: np.ndarray  # queued_ts from the first request
    prompt: np.ndarray
    output: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    flags: dict  # max_num_seqs, max_num_batched_tokens, replicas, kv_blocks, block_size, ...
    timeseries: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def _tpot(first, last, out):
    return np.where(out >= 2, (last - first) / np.maximum(out - 1, 1), np.nan)


def load_run(run_dir: str | Path, kv_blocks: int | None = None) -> RecordedRun:
    """Read a recorded vLLM run folder (requests.jsonl, meta.json, optional timeseries.csv).

    ``kv_blocks`` supplies the KV cache size when meta.json does not record it (e.g. from
    another run on the same GPU, model and vLLM version); otherwise it is inferred from the run
    itself (:func:`sim.experiments.kv_infer.infer_kv_blocks`), and unlimited if the run never ran out of KV.
    """
    rec = read_recorded(run_dir)  # every file checked there (sim/experiments/recorded.py)
    d, df, meta, ts = rec.path, rec.requests, rec.meta, rec.timeseries
    q = df["queued_ts"].to_numpy(float)
    first = df["first_token_ts"].to_numpy(float)
    last = df["last_token_ts"].to_numpy(float)
    out = df["output_toks"].to_numpy(np.int64)
    prompt = df["input_toks"].to_numpy(np.int64)
    kw = meta.get("engine_kwargs") or {}
    order = np.argsort(q, kind="stable")
    q, first, last, out, prompt = q[order], first[order], last[order], out[order], prompt[order]
    notes = []
    kv = (meta.get("kv_cache") or {}).get("num_gpu_blocks")
    block = (meta.get("kv_cache") or {}).get("block_size") or 16
    kv_source = "recorded" if kv is not None else None
    if kv is None and kv_blocks:
        kv, kv_source = kv_blocks, "given"
        notes.append(f"KV cache size not recorded: {kv_blocks} blocks given by the caller")
    elif kv is None:
        kv, how = infer_kv_blocks(df, ts, meta, max_num_seqs=int(kw.get("max_num_seqs") or 256),
                                  block_size=int(block))
        kv_source = "inferred" if kv is not None else "unlimited"
        notes.append(how)
    flags = {
        "max_num_seqs": int(kw.get("max_num_seqs") or 256),
        "max_num_batched_tokens": int(kw.get("max_num_batched_tokens") or 8192),
        "replicas": int(kw.get("data_parallel_size") or 1),
        "tensor_parallel_size": int(kw.get("tensor_parallel_size") or 1),
        "kv_blocks": int(kv) if kv else None,
        "kv_source": kv_source,
        "block_size": int(block),
        "model": meta.get("model"),
        "vllm_version": meta.get("vllm_version"),
        "gpu": (meta.get("hardware") or {}).get("device_name"),
        # timestamps seen from an HTTP client (record-serving, collect --endpoint): they include
        # the API server's own per-request latency, fitted as `overhead` (see fit_runs)
        "client_timing": str(meta.get("timing_source") or "").startswith("client"),
    }
    run = RecordedRun(d.name, q - q[0], prompt, out, first - q, _tpot(first, last, out), last - q,
                      flags, ts, notes)
    for m, x in (("TTFT", run.ttft_s), ("TPOT", run.tpot_s), ("E2E", run.e2e_s)):
        st = stats(x) if np.isfinite(x).any() else {}
        if not st or min(st.values()) <= 0:  # the fit divides by the recorded latencies
            raise UserError(f"the recorded {m} mean, median and p90 must be > 0 (TPOT needs "
                            "requests with output_toks >= 2): nothing to calibrate against",
                            where=str(d / "requests.jsonl"))
    return run


def engine_for(run: RecordedRun, step: LinearStepModel, kv_blocks: int | None = "run") -> EngineConfig:
    return EngineConfig(
        step=step,
        max_num_seqs=run.flags["max_num_seqs"],
        max_num_batched_tokens=run.flags["max_num_batched_tokens"],
        replicas=run.flags["replicas"],
        routing="least-loaded",
        kv_blocks=run.flags["kv_blocks"] if kv_blocks == "run" else kv_blocks,
        block_size=run.flags["block_size"],
    )


def replay(run: RecordedRun, cfg: EngineConfig, overhead_s: float = 0.0) -> dict[str, np.ndarray]:
    """Simulated (ttft, tpot, e2e) seconds of every request of ``run`` through engine ``cfg``;
    ``overhead_s`` (the API server's latency outside the engine) is added to TTFT and E2E."""
    env = simpy.Environment()
    n = len(run.arrival_s)
    rec = Recorder(n)
    reps = [Replica(env, cfg, run.prompt, run.output, rec, r) for r in range(cfg.replicas)]
    router = Router(reps, cfg.routing)
    arr = run.arrival_s

    def feeder():
        i = 0
        while i < n:
            if arr[i] > env.now:
                yield env.timeout(arr[i] - env.now)
            j = int(np.searchsorted(arr, env.now, side="right"))
            router.dispatch(np.arange(i, j, dtype=np.int64))
            i = j

    env.process(feeder())
    env.run()
    return {"ttft": rec.first_token_s - arr + overhead_s,
            "tpot": _tpot(rec.first_token_s, rec.finish_s, run.output),
            "e2e": rec.finish_s - arr + overhead_s, "preemptions": rec.preemptions}


def stats(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p90": float(np.percentile(x, 90))}


def real_stats(run: RecordedRun) -> dict[str, dict[str, float]]:
    return {"ttft": stats(run.ttft_s), "tpot": stats(run.tpot_s), "e2e": stats(run.e2e_s)}


#: Stage 1's guess when neither the regression nor the time series can say anything.
GENERIC_START = LinearStepModel(c0_s=0.01, c1_s=50e-6, c2_s=150e-6)


def _model(coef) -> LinearStepModel | None:
    """A stage-1 result as a step model (None without a fixed cost: Nelder-Mead works on logs,
    so c1 and c2 get a floor of 1 us)."""
    if coef is None or not coef[0] > 0:
        return None
    return LinearStepModel(c0_s=float(coef[0]), c1_s=float(max(coef[1], 1e-6)),
                           c2_s=float(max(coef[2], 1e-6)))


def _decode_design(run: RecordedRun):
    """The run's per-request decode regression rows (sim/experiments/decode_regression.py)."""
    first, last = run.arrival_s + run.ttft_s, run.arrival_s + run.e2e_s
    return decode_design(first, last, run.prompt, run.output, run.flags["replicas"])


def _timeseries_fit(run: RecordedRun) -> LinearStepModel | None:
    """Stage 1's fallback: NNLS on the per-second time series (each busy second is ``c0 * steps
    + c1 * prompt tokens + c2 * generated tokens``, steps ~ generated / running)."""
    ts = run.timeseries
    if ts is not None and {"prompt_throughput", "gen_throughput", "running"} <= set(ts.columns):
        busy = ts[(ts["running"] > 0) & (ts["gen_throughput"] > 0)]
        if len(busy) >= 5:
            # Data-parallel engines step side by side: each gets 1/R of the tokens.
            r = run.flags["replicas"]
            steps = busy["gen_throughput"] / busy["running"]
            A = np.column_stack([steps, busy["prompt_throughput"] / r, busy["gen_throughput"] / r])
            coef, _ = nnls(A, np.ones(len(busy)))
            return _model(coef)
    return None


def initial_fit(run: RecordedRun) -> LinearStepModel:
    """Stage 1 on one run: the per-request decode-time regression, else the time-series NNLS,
    else a generic guess."""
    return initial_fit_runs([run])


#: A run whose replay with its own regression fit preempts more than this share of its requests
#: is KV-bound: its requests' decode windows include the time they waited to be recomputed, which
#: the regression reads as steps (on the RTX 4090 runs, about half the requests: c1 came out
#: 1-8 us/token instead of ~100), so stage 1 takes its time-series fit instead.
KV_BOUND_SHARE = 0.01


def _kv_bound(run: RecordedRun, step: LinearStepModel) -> bool:
    if run.flags["kv_blocks"] is None:
        return False
    pre = replay(run, engine_for(run, step))["preemptions"]
    return bool((pre > 0).sum() > KV_BOUND_SHARE * len(pre))


def initial_fit_runs(runs: list[RecordedRun]) -> LinearStepModel:
    """Stage 1 on several runs: one NNLS over every run's decode-regression rows stacked
    (:mod:`sim.experiments.decode_regression`; rows in seconds, see ``fit_design`` for why not
    relative).  A KV-bound run (its replay with its own regression fit preempts more than
    :data:`KV_BOUND_SHARE` of its requests) takes its time-series fit instead: preempted
    requests' windows include their wait to be recomputed, which the regression cannot tell
    from steps.  If a run has fewer than ``MIN_REQUESTS`` usable requests, is KV-bound, or the
    joint fit finds no fixed cost: the geometric mean of the runs' own stage-1 fits, each the
    time series for a KV-bound run, else the regression, else the time series
    (:func:`_timeseries_fit`), else the generic guess."""
    designs = [_decode_design(r) for r in runs]
    own = [_model(fit_design([d])) for d in designs]
    bound = [m is not None and _kv_bound(r, m) for r, m in zip(runs, own)]
    if not any(bound):
        joint = _model(fit_design(designs)) if len(runs) > 1 else own[0]
        if joint is not None:
            return joint
    fits = [((_timeseries_fit(r) or m) if b else (m or _timeseries_fit(r))) or GENERIC_START
            for r, m, b in zip(runs, own, bound)]
    if len(fits) == 1:
        return fits[0]
    g = np.exp(np.log([[m.c0_s, m.c1_s, m.c2_s] for m in fits]).mean(axis=0))
    return LinearStepModel(float(g[0]), float(g[1]), float(g[2]))


def _loss(sim: dict, real: dict) -> float:
    err = [np.log(stats(sim[m])[s] / real[m][s]) for m, s in FIT_ON]
    return float(np.sum(np.square(err)))


def fit(run: RecordedRun, start: LinearStepModel | None = None, max_evals: int = 160) -> LinearStepModel:
    """Stage 2: the step coefficients whose replay best reproduces the recorded latencies."""
    return fit_runs([run], start, max_evals=max_evals)[0]


#: Starting guess of the per-request overhead of client-timed runs, seconds.
OVERHEAD_START_S = 0.01


def fit_runs(runs: list[RecordedRun], start: LinearStepModel | None = None,
             max_evals: int = 160) -> tuple[LinearStepModel, float]:
    """Stage 2 on several runs at once: ``(step model, overhead s)`` minimising the summed loss
    of every replay (each run with its own flags).  Starts from the joint stage-1 fit of the
    runs (:func:`initial_fit_runs`).

    When the runs' timestamps were taken by an HTTP client (``client_timing``), a fourth
    parameter is fitted: a constant per-request overhead added to TTFT and E2E, the API
    server's own latency outside the engine's steps (request parsing, detokenising, streaming:
    ~35 ms for the tiny model on the shared 2-core CPU, where it, not prefill, dominates TTFT).
    Engine-timed runs (the shared GPU runs) keep it at 0.
    """
    if start is None:
        start = initial_fit_runs(runs)
    reals = [real_stats(r) for r in runs]
    with_overhead = any(r.flags.get("client_timing") for r in runs)
    x0 = np.log([start.c0_s, start.c1_s, start.c2_s] + ([OVERHEAD_START_S] if with_overhead else []))
    dim = len(x0)

    def objective(x):
        c = np.exp(np.clip(x, -25, 3))  # a wild simplex vertex must not overflow
        step = LinearStepModel(c[0], c[1], c[2])
        d0 = c[3] if with_overhead else 0.0
        return sum(_loss(replay(r, engine_for(r, step), d0), real) for r, real in zip(runs, reals))

    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 0.01, "fatol": 1e-4,
                            "initial_simplex": x0 + np.vstack([np.zeros(dim), 0.3 * np.eye(dim)])})
    c = np.exp(np.clip(res.x, -25, 3))
    return (LinearStepModel(float(c[0]), float(c[1]), float(c[2])),
            float(c[3]) if with_overhead else 0.0)


def compare(run: RecordedRun, step: LinearStepModel, overhead_s: float = 0.0) -> dict:
    """Simulated vs real TTFT, TPOT, E2E (mean, median, p90) in ms, with relative errors."""
    sim_raw = replay(run, engine_for(run, step), overhead_s)
    sim = {m: stats(sim_raw[m]) for m in METRICS}
    real = real_stats(run)
    rows = []
    for m in METRICS:
        for s in STATS:
            r, v = real[m][s] * 1000, sim[m][s] * 1000
            rows.append({"metric": m, "stat": s, "real_ms": r, "sim_ms": v, "error": (v - r) / r})
    return {"rows": rows, "preemptions": int(sim_raw["preemptions"].sum())}


def calibrate(run_dir: str | Path, *, kv_blocks: int | None = None, max_evals: int = 160) -> dict:
    """``clearsim calibrate RUN_DIR``: fit the linear step model to a recorded vLLM run and
    compare the replay with the recording.  Returns a JSON-ready dict."""
    run = load_run(run_dir, kv_blocks)
    start = initial_fit(run)
    step, overhead = fit_runs([run], start, max_evals=max_evals)
    cmp = compare(run, step, overhead)
    err = {(r["metric"], r["stat"]): r["error"] for r in cmp["rows"]}
    return {
        "run": run.name,
        "flags": run.flags,
        "notes": run.notes,
        "requests": len(run.arrival_s),
        "initial": _coeffs(start),
        "fitted": _coeffs(step, overhead),
        "rows": cmp["rows"],
        "preemptions": cmp["preemptions"],
        "target": {"e2e_median_error": err[("e2e", "median")], "tpot_mean_error": err[("tpot", "mean")],
                   "within_15pct": bool(abs(err[("e2e", "median")]) <= 0.15
                                        and abs(err[("tpot", "mean")]) <= 0.15)},
    }


def cross_check(fit_dir: str | Path, test_dir: str | Path, *, max_evals: int = 160,
                test_kv_blocks: int | None = None) -> dict:
    """Fit on one run, replay another with those coefficients (out-of-sample check)."""
    step = fit(load_run(fit_dir), max_evals=max_evals)
    test = load_run(test_dir, test_kv_blocks)
    return {"fit_on": Path(fit_dir).name, "test_on": test.name, "fitted": _coeffs(step),
            **compare(test, step)}


OOS_TARGET = 0.10


def out_of_sample(fit_dirs: list, check_dirs: list, *, max_evals: int = 160) -> dict:
    """``clearsim calibrate --fit RUN... --check RUN...``: fit one step model on the ``fit``
    runs together, replay every ``check`` run with it, and report the errors there (runs the
    fit never saw).  Target: median E2E and mean TPOT within 10% on every check run."""
    if not fit_dirs or not check_dirs:
        raise UserError("give at least one run to --fit and one to --check", field="--fit")
    names = [Path(p).name for p in fit_dirs]
    overlap = sorted({Path(p).resolve() for p in fit_dirs} & {Path(p).resolve() for p in check_dirs})
    if overlap:
        raise UserError(f"{overlap[0]} is both fitted and checked: a check run must be one the fit "
                        "did not see", field="--check")
    fits = [load_run(p) for p in fit_dirs]
    checks = [load_run(p) for p in check_dirs]
    step, overhead = fit_runs(fits, max_evals=max_evals)
    out = []
    for run in checks:
        cmp = compare(run, step, overhead if run.flags.get("client_timing") else 0.0)
        err = {(r["metric"], r["stat"]): r["error"] for r in cmp["rows"]}
        e2e, tpot = err[("e2e", "median")], err[("tpot", "mean")]
        out.append({"run": run.name, "flags": run.flags, "notes": run.notes,
                    "requests": len(run.arrival_s), **cmp,
                    "target": {"e2e_median_error": e2e, "tpot_mean_error": tpot,
                               "within_10pct": bool(abs(e2e) <= OOS_TARGET and abs(tpot) <= OOS_TARGET)}})
    return {"fit_on": names, "fit_notes": {r.name: r.notes for r in fits}, "fitted": _coeffs(step, overhead),
            "checks": out, "all_within_10pct": all(c["target"]["within_10pct"] for c in out)}


def format_out_of_sample(res: dict) -> str:
    """The table ``clearsim calibrate --fit ... --check ...`` prints."""
    f = res["fitted"]
    lines = [f"fitted on {', '.join(res['fit_on'])}: c0 {f['c0_us'] / 1000:.2f} ms + c1 "
             f"{f['c1_us']:.1f} us/prefill token + c2 {f['c2_us']:.1f} us/decoding seq"
             + (f"; API server overhead {f['overhead_ms']:.1f} ms/request" if f["overhead_ms"] else "")]
    for name, notes in res["fit_notes"].items():
        lines += [f"note ({name}): {n}" for n in notes]
    for c in res["checks"]:
        lines.append(f"check {c['run']}: {c['requests']} requests, max_num_seqs "
                     f"{c['flags']['max_num_seqs']}, KV blocks {c['flags']['kv_blocks'] or 'unlimited'}")
        lines += [f"note: {n}" for n in c["notes"]]
        lines += _latency_table(c["rows"])
        t = c["target"]
        lines.append(f"out of sample (median E2E and mean TPOT within 10%): "
                     f"{'met' if t['within_10pct'] else 'NOT met'} "
                     f"({t['e2e_median_error']:+.1%}, {t['tpot_mean_error']:+.1%})")
    return "\n".join(lines)


def _latency_table(rows: list[dict]) -> list[str]:
    """Real vs simulated latency, one line per (metric, statistic), as both reports print it."""
    out = [f"{'metric':8s} {'stat':6s} {'real ms':>10s} {'sim ms':>10s} {'error':>8s}"]
    out += [f"{r['metric']:8s} {r['stat']:6s} {r['real_ms']:10.1f} {r['sim_ms']:10.1f} "
            f"{r['error']:+8.1%}" for r in rows]
    return out


def _coeffs(step: LinearStepModel, overhead_s: float = 0.0) -> dict[str, float]:
    return {"c0_us": step.c0_s * 1e6, "c1_us": step.c1_s * 1e6, "c2_us": step.c2_s * 1e6,
            "overhead_ms": overhead_s * 1e3}


def format_report(res: dict) -> str:
    """The table ``clearsim calibrate`` prints."""
    f = res["fitted"]
    lines = [f"run {res['run']}: {res['requests']} requests, max_num_seqs {res['flags']['max_num_seqs']}, "
             f"max_num_batched_tokens {res['flags']['max_num_batched_tokens']}, replicas "
             f"{res['flags']['replicas']}, KV blocks {res['flags']['kv_blocks'] or 'unlimited'}"]
    lines += [f"note: {n}" for n in res["notes"]]
    lines.append(f"fitted step model: c0 {f['c0_us'] / 1000:.2f} ms + c1 {f['c1_us']:.1f} us/prefill "
                 f"token + c2 {f['c2_us']:.1f} us/decoding seq"
                 + (f" + API server overhead {f['overhead_ms']:.1f} ms/request" if f["overhead_ms"] else "")
                 + "   (simulated preemptions: "
                 f"{res['preemptions']})")
    lines += _latency_table(res["rows"])
    t = res["target"]
    lines.append(f"target (median E2E and mean TPOT within 15%): "
                 f"{'met' if t['within_15pct'] else 'NOT met'} "
                 f"({t['e2e_median_error']:+.1%}, {t['tpot_mean_error']:+.1%})")
    return "\n".join(lines)


__all__ = ["calibrate", "compare", "cross_check", "fit", "fit_runs", "format_out_of_sample",
           "format_report", "initial_fit", "initial_fit_runs", "load_run", "out_of_sample", "replay"]
