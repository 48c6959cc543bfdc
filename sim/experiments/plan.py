"""Capacity planning: the fewest replicas (or the highest arrival rate) that meets the SLOs.

A plan file::

    base: default                      # scenario name or path
    budget: 400                        # mean tokens per query
    policies: [uniform, clear-windowed]
    search: {over: replicas, min: 1, max: 32}   # or {over: rate, min: 1, max: 400, tolerance: 0.02}
    slo: {p99_e2e_s: 20, accuracy: 0.25}
    seeds: [0, 1]
    price_per_gpu_hour: 2.5
    set: {arrivals.queries: 1000}      # optional fixed overrides

For each policy a bisection over simulated runs finds the answer: p99 end-to-end latency only
falls as replicas are added (and only rises with the arrival rate), and accuracy does not
depend on either (policies see no engine state), so the feasible set is an interval and
bisection needs O(log range) runs per policy, each averaged over the seeds.

Cost is what is provisioned, not what is busy: ``replicas x run duration`` GPU-hours per 1,000
arriving queries (an idle replica is paid for too), and that times the hourly price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.foundation.errors import UserError
from sim.foundation.progress import ProgressOptions, progress_bar
from sim.experiments.scenario import MAX_REPLICAS
from sim.foundation.spec import Field, check, non_negative, positive, read_yaml
from sim.experiments.sweep import base_path, check_key, find_file


def _seeds(v):
    ok = v and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v)
    return None if ok and len(set(v)) == len(v) else "expected a non-empty list of distinct integers >= 0"


SEARCH_SPEC = {
    "over": Field((str,), "replicas", "what to search: the fewest replicas, or the highest "
                  "arrival rate at the scenario's replicas", choices=("replicas", "rate")),
    "min": Field((float,), 1, "lower end of the search range", check=positive),
    "max": Field((float,), 64, "upper end of the search range (replicas: at most "
                 f"{MAX_REPLICAS:,})", check=positive),
    "tolerance": Field((float,), 0.02, "relative precision of a rate search", check=positive),
}
SLO_SPEC = {
    "p99_e2e_s": Field((float,), doc="p99 end-to-end latency limit L (seconds)", check=positive),
    "accuracy": Field((float,), 0.0, "accuracy floor A, in [0, 1]", check=non_negative, max=1.0),
    "accuracy_metric": Field((str,), "expected_accuracy", "which accuracy the floor applies to "
                             "(expected: same mean as sampled, lower variance)",
                             choices=("expected_accuracy", "accuracy")),
}
PLAN_SPEC = {
    "name": Field((str,), None, "plan name (default: the file name)", nullable=True),
    "description": Field((str,), "", "what the plan is for"),
    "base": Field((str,), "default", "base scenario: a shipped name or a path"),
    "budget": Field((float,), None, "mean tokens per query (default: the scenario's)",
                    nullable=True, check=positive),
    "policies": Field((list,), None, "policies to size (default: the scenario's)", nullable=True),
    "search": Field((dict,), None, "what to search and over which range", nullable=True),
    "slo": Field((dict,), doc="service-level objectives: p99_e2e_s, accuracy"),
    "seeds": Field((list,), [0], "seeds averaged at every evaluated point", check=_seeds),
    "price_per_gpu_hour": Field((float,), 0.0, "dollars per GPU-hour", check=non_negative),
    "set": Field((dict,), None, "dotted scenario key -> value, applied to every run", nullable=True),
}


def plans_dir() -> Path:
    from sim.experiments.scenario import scenarios_dir

    return scenarios_dir() / "plans"


@dataclass
class Point:
    """One evaluated (policy, replicas, rate), averaged over the seeds."""

    replicas: int
    rate: float
    accuracy: float
    p99_e2e_s: float
    tokens_per_query: float
    gpu_hours_per_1k: float
    met_latency: bool
    met_accuracy: bool

    @property
    def met(self) -> bool:
        return self.met_latency and self.met_accuracy


@dataclass
class PlanRow:
    policy: str
    point: Point | None  # the answer, or the best tried point when nothing meets the SLOs
    met: bool
    runs: int
    note: str = ""


@dataclass
class PlanResult:
    name: str
    spec: dict
    rows: list[PlanRow] = field(default_factory=list)

    def table(self) -> str:
        return format_plan(self)


def load_plan(name_or_path: str, overrides: dict | None = None) -> tuple[dict, str, Path]:
    path = find_file(name_or_path, plans_dir(), "plan")
    where = str(path)
    spec = check(read_yaml(path, "plan"), PLAN_SPEC, where=where)
    spec["search"] = check(spec["search"], SEARCH_SPEC, where=where, path="search")
    spec["slo"] = check(spec["slo"], SLO_SPEC, where=where, path="slo")
    s = spec["search"]
    if s["min"] > s["max"]:
        raise UserError(f"min {s['min']:g} > max {s['max']:g}", where=where, field="search.min")
    if s["over"] == "replicas" and (s["min"] != int(s["min"]) or s["max"] != int(s["max"])):
        raise UserError("a replicas search needs whole numbers", where=where, field="search")
    if s["over"] == "replicas" and s["max"] > MAX_REPLICAS:
        raise UserError(f"got {s['max']:g}; a replicas search goes up to {MAX_REPLICAS:,} "
                        "(run-away guard)", where=where, field="search.max")
    for key in spec["set"] or {}:
        check_key(str(key), where=where, field_path=f"set.{key}")
    for key in overrides or {}:
        check_key(key, where="--set", field_path=key)
    spec["name"] = spec["name"] or path.stem
    return spec, where, path


def max_points(search: dict) -> int:
    """The most distinct values :func:`_search` evaluates: both ends, then one per halving.

    Replicas: the bracket (lo, hi] halves until it is 1 wide.  Rate: the bracket halves until
    (hi - lo) / lo <= tolerance, and lo never falls, so that is reached once hi - lo is at most
    tolerance x min.  Progress uses it as the total (an upper bound, so the ETA is one too).
    """
    lo, hi = search["min"], search["max"]
    if search["over"] == "replicas":
        width = int(hi) - int(lo)
        return 1 if width == 0 else 2 + max(0, math.ceil(math.log2(width)))
    ratio = (hi - lo) / (lo * search["tolerance"])
    return 1 if hi == lo else 2 + (math.ceil(math.log2(ratio)) if ratio > 1 else 0)


def plan(plan_file: str, *, overrides: dict | None = None, policies=None,
         price_per_gpu_hour: float | None = None,
         progress: bool | None | ProgressOptions = None) -> PlanResult:
    """``clearsim plan``: size the fleet (or the load) per policy by bisection over runs.

    ``overrides`` (``--set``) apply to the scenario; ``price_per_gpu_hour`` replaces the plan's.
    ``progress`` counts simulated runs (as in :func:`sim.experiments.sweep.sweep`; :mod:`sim.foundation.progress`);
    its total is the bisection's upper bound, lowered as each policy's search ends.
    """
    from sim.experiments.runner import resolve

    spec, where, path = load_plan(plan_file, overrides)
    if price_per_gpu_hour is not None:
        if price_per_gpu_hour < 0:
            raise UserError(f"got {price_per_gpu_hour!r}; must be >= 0", field="price_per_gpu_hour")
        spec["price_per_gpu_hour"] = float(price_per_gpu_hour)
    fixed = {**(spec["set"] or {}), **(overrides or {})}
    if spec["budget"] is not None:
        fixed["budget"] = spec["budget"]
    base = base_path(spec["base"], path)
    chosen = policies if policies is not None else spec["policies"]
    try:
        probe = resolve(base, policies=chosen, overrides=fixed)
    except UserError as exc:
        raise UserError(f"{exc}", where=where) from None
    search = spec["search"]
    result = PlanResult(spec["name"], spec)
    per_policy = max_points(search) * len(spec["seeds"])
    with progress_bar(per_policy * len(probe["policies"]), desc=f"plan {spec['name']}",
                      noun="run", progress=progress) as bar:
        for i, pol in enumerate(probe["policies"]):
            ev = Evaluator(probe, pol, spec, tick=bar.update)
            row = _search(pol["label"], ev, search)
            row.runs = len(ev.cache) * len(spec["seeds"])
            result.rows.append(row)
            bar.total = bar.n + per_policy * (len(probe["policies"]) - i - 1)  # unused runs off
            bar.refresh()
    return result


class Evaluator:
    """Simulates one policy at a searched value (replicas or rate), each seed, with a cache."""

    def __init__(self, probe: dict, pol: dict, spec: dict, tick=None):
        self.probe, self.pol, self.spec = probe, pol, spec
        self.cache: dict[float, Point] = {}
        self.tick = tick or (lambda n=1: None)  # called after each simulated run (progress)

    def __call__(self, value: float) -> Point:
        from sim.experiments.runner import simulate

        if value in self.cache:
            return self.cache[value]
        spec, slo = self.spec, self.spec["slo"]
        accs, p99s, tpq, gpu_h = [], [], [], []
        for seed in spec["seeds"]:
            sc = dict(self.probe, seed=seed, policies=[self.pol])
            sc["engine"] = dict(self.probe["engine"])
            sc["arrivals"] = dict(self.probe["arrivals"])
            if spec["search"]["over"] == "replicas":
                sc["engine"]["replicas"] = int(value)
            else:
                sc["arrivals"]["rate"] = float(value)
            r = simulate(sc).summary["results"][0]
            self.tick(1)
            accs.append(r[slo["accuracy_metric"]])
            p99 = r["e2el_ms"]["p99"]
            p99s.append(math.inf if p99 is None else p99 / 1000)
            tpq.append(r["tokens_per_query"])
            gpu_h.append(sc["engine"]["replicas"] * r["sim_duration_s"] / 3600
                         * 1000 / max(r["n_queries"], 1))
        rate = sc["arrivals"]["rate"]  # None for a trace replayed at its own pace
        acc, p99 = float(np.mean(accs)), float(np.mean(p99s))
        pt = Point(int(sc["engine"]["replicas"]), math.nan if rate is None else float(rate), acc,
                   p99, float(np.mean(tpq)), float(np.mean(gpu_h)), p99 <= slo["p99_e2e_s"],
                   acc >= slo["accuracy"])
        self.cache[value] = pt
        return pt


def _search(label: str, evaluate, search: dict) -> PlanRow:
    lo, hi = search["min"], search["max"]
    if search["over"] == "replicas":
        lo, hi = int(lo), int(hi)
        top = evaluate(hi)
        if not top.met:
            why = "accuracy below the floor at any size" if not top.met_accuracy else \
                f"p99 above the limit even at {hi} replicas"
            return PlanRow(label, top, False, 0, why)
        first = evaluate(lo)
        if first.met:
            return PlanRow(label, first, True, 0)
        while hi - lo > 1:  # invariant: lo fails, hi meets
            mid = (lo + hi) // 2
            if evaluate(mid).met:
                hi = mid
            else:
                lo = mid
        return PlanRow(label, evaluate(hi), True, 0)
    bottom = evaluate(lo)
    if not bottom.met:
        why = "accuracy below the floor" if not bottom.met_accuracy else \
            f"p99 above the limit even at {lo:g}/s"
        return PlanRow(label, bottom, False, 0, why)
    top = evaluate(hi)
    if top.met:
        return PlanRow(label, top, True, 0, "met at the top of the range")
    while (hi - lo) / lo > search["tolerance"]:  # invariant: lo meets, hi fails
        mid = (lo + hi) / 2
        if evaluate(mid).met:
            lo = mid
        else:
            hi = mid
    return PlanRow(label, evaluate(lo), True, 0)


def format_plan(res: PlanResult) -> str:
    spec = res.spec
    price = spec["price_per_gpu_hour"]
    head = ["policy", "meets", "replicas", "rate/s", "accuracy", "p99 e2e s", "tokens/q",
            "GPU-h/1k q", f"$/1k q @{price:g}/h", "runs"]
    rows = []
    for r in res.rows:
        p = r.point
        rows.append([r.policy, "yes" if r.met else "no", str(p.replicas), f"{p.rate:,.1f}",
                     f"{p.accuracy:.3f}", f"{p.p99_e2e_s:,.2f}", f"{p.tokens_per_query:,.1f}",
                     f"{p.gpu_hours_per_1k:.4f}", f"{p.gpu_hours_per_1k * price:,.4f}", str(r.runs)])
    widths = [max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(head), line(["-" * w for w in widths])] + [line(x) for x in rows]
    notes = [f"  {r.policy}: {r.note}" for r in res.rows if r.note]
    slo = spec["slo"]
    goal = "fewest replicas" if spec["search"]["over"] == "replicas" else "highest arrival rate"
    out.insert(0, f"plan {res.name}: {goal} with p99 e2e <= {slo['p99_e2e_s']:g} s and "
               f"{slo['accuracy_metric'].replace('_', ' ')} >= {slo['accuracy']:g}, "
               f"seeds {spec['seeds']}")
    return "\n".join(out + notes)


__all__ = ["plan", "load_plan", "PlanResult", "format_plan"]
