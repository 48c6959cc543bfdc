"""Scenarios: one YAML file describes a whole experiment; this module loads and validates it.

Every field, its default and what it allows is declared once in ``SCENARIO_SPEC`` (and each
policy's ``PARAMS``); ``clearsim scenario-fields`` prints them and the README lists them.  A
scenario is resolved into a plain dict with every default filled in, which is what a run folder
stores as ``scenario.yaml``.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import yaml

from policies.base import REGISTRY
from sim.core.arrivals import PROCESSES, TRACE_ALIASES, _schedule_ok, check_arrivals
from sim.foundation.errors import UserError
from sim.core.presets import presets
from sim.foundation.spec import REQUIRED, Field, check, non_negative, positive, read_yaml
from traces.curves import SEMANTICS
from traces.pools import EDGE_PRESETS, POOL_EDGES, REASONING_EDGES, STREAMS
from traces.predictors import PREDICTOR_SPEC


MAX_QUERIES = 10_000_000  # run-away guards, stated in --help (scenario-fields) and docs
MAX_REPLICAS = 4096
MAX_BUDGET = 1e7  # mean tokens per query
MAX_SEED = 2**63 - 1
GUARDS_HELP = (
    "Run-away guards (bad input is refused before anything runs or is written): every number "
    "finite and at most 1e12; arrivals.queries <= 10,000,000; engine.replicas <= 4096 (also a "
    "plan's replicas search); budget <= 1e7 tokens/query; arrivals.rate in [1e-6, 1e9]; seed < "
    "2**63; predictor.sigma <= 20; a YAML file whose aliases expand to more than 100,000 values "
    "is refused; error messages quote values cut short.  See docs/hardening.md.")


def _sets(v) -> str | None:
    if not v or not all(isinstance(s, str) and s for s in v):
        return "expected a non-empty list of trace set names (see 'clearsim traces list')"
    if len(set(v)) != len(v):
        return "a trace set is listed twice; list each once (use traces.mix to weight them)"
    return None


def _edges(v) -> str | None:
    if isinstance(v, str):
        return None if v in EDGE_PRESETS else (f"expected [easy_max, medium_max] or one of "
                                               f"{', '.join(EDGE_PRESETS)}")
    ok = (len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
          and 0 < v[0] < v[1])
    return None if ok else "expected two increasing positive token counts [easy_max, medium_max]"


TRACES_SPEC = {
    "sets": Field((list,), doc="trace set names (embedded or imported) or .parquet paths",
                  check=_sets),
    "mix": Field((dict,), None, "weight per dataset; null = every query equally likely",
                 nullable=True),
    "stream": Field((str,), None, "one of the paper's difficulty streams (exact pool "
                    "proportions, see docs/traces.md); null = draw by mix", nullable=True,
                    choices=tuple(STREAMS)),
    "pools": Field((dict,), None, "weight per difficulty pool {easy, medium, hard} (exact "
                   "counts; instead of stream)", nullable=True),
    "pool_edges": Field((list, str), None, "tau edges (tokens) between the easy, medium and "
                        "hard pools: [easy_max, medium_max], a preset (short = "
                        f"{list(POOL_EDGES)}, reasoning = {list(REASONING_EDGES)}) or null = "
                        "the preset the trace sets name (reasoning sets: reasoning)",
                        nullable=True, check=_edges),
    "outcomes": Field((str,), "empirical", "hidden outcomes: recorded samples or draws from "
                      "the fitted curves", choices=("empirical", "fitted")),
    "semantics": Field((str,), "hard-cap", "what a run stopped at its cap answers: hard-cap "
                       "(wrong) or forced-answer (its last recorded probe; needs sets with "
                       "probes, see docs/reasoning-traces.md)", choices=SEMANTICS),
}
ARRIVALS_SPEC = {
    "process": Field((str,), "poisson", "arrival process (see docs/engine.md)", choices=PROCESSES),
    "rate": Field((float,), None, "mean arrivals per second (required except for replay, where "
                  "it rescales the trace to this mean rate); 1e-6 to 1e9", nullable=True,
                  check=positive, min=1e-6, max=1e9),
    "queries": Field((int,), doc="number of arriving queries (the run's horizon); at most "
                     f"{MAX_QUERIES:,} (run-away guard)", check=positive, max=MAX_QUERIES),
    "burstiness": Field((float,), 1.0, "gamma: shape of the gaps, as vllm bench --burstiness "
                        "(1 = Poisson, < 1 burstier)", check=positive),
    "schedule": Field((list,), None, "piecewise: [[start_s, rate], ...] from 0", nullable=True,
                      check=_schedule_ok),
    "period_s": Field((float,), None, "piecewise: repeat the schedule every period_s; daily: the "
                      "cycle (86400)", nullable=True, check=positive),
    "amplitude": Field((float,), 0.5, "daily: relative swing of the rate, in [0, 1)",
                       check=non_negative),
    "peak_s": Field((float,), None, "daily: time of the peak rate (period_s / 2)", nullable=True,
                    check=non_negative),
    "trace": Field((str,), None, "replay: CSV/JSONL path or " + ", ".join(TRACE_ALIASES),
                   nullable=True),
    "time_scale": Field((float,), 1.0, "replay: multiply the trace's times (0.5 = twice as fast)",
                        check=positive),
    "trace_prompts": Field((bool,), False, "replay: use the trace's input lengths as prompt tokens"),
}


def _engine_spec() -> dict[str, Field]:
    return {
        "preset": Field((str,), "qwen2.5-math-7b-h100", "step-time preset (model, GPU)",
                        choices=tuple(presets())),
        "replicas": Field((int,), 1, f"number of GPU replicas (at most {MAX_REPLICAS:,})",
                          check=positive, max=MAX_REPLICAS),
        "routing": Field((str,), "round-robin", "how requests are spread over replicas",
                         choices=("round-robin", "least-loaded")),
        "max_num_seqs": Field((int,), 256, "running-batch cap (vLLM --max-num-seqs)", check=positive),
        "max_num_batched_tokens": Field((int,), 8192, "prefill tokens per step "
                                        "(vLLM --max-num-batched-tokens)", check=positive),
        "c0_ms": Field((float,), None, "override: fixed cost per step (ms)", nullable=True,
                       check=non_negative),
        "c1_us": Field((float,), None, "override: cost per prefill token (us)", nullable=True,
                       check=non_negative),
        "c2_us": Field((float,), None, "override: cost per decoding sequence (us)", nullable=True,
                       check=non_negative),
        "request_overhead_ms": Field((float,), None, "override: CPU time before a request "
                                     "reaches the scheduler (ms)", nullable=True, check=non_negative),
        "c3_us": Field((float,), None, "override: cost per context token of the decoding "
                       "sequences (us)", nullable=True, check=non_negative),
        "step_model": Field((str,), None, "override: linear or table (the preset's)",
                            nullable=True, choices=("linear", "table")),
        "step_table": Field((str,), None, "table: CSV with columns tokens, step_ms", nullable=True),
        "kv_blocks": Field((int,), None, "override: KV cache blocks per replica (the preset's "
                           "capacity; 0 = unlimited)", nullable=True, check=non_negative),
        "block_size": Field((int,), 16, "KV cache block size in tokens (vLLM --block-size)",
                            check=positive),
        "timeseries_s": Field((float,), 1.0, "sampling interval of timeseries.parquet (s)",
                              check=positive),
    }


SLO_SPEC = {
    "ttft_ms": Field((float,), None, "goodput: time to first token limit (ms)", nullable=True,
                     check=positive),
    "tpot_ms": Field((float,), None, "goodput: time per output token limit (ms)", nullable=True,
                     check=positive),
    "e2el_ms": Field((float,), None, "goodput: end-to-end latency limit (ms)", nullable=True,
                     check=positive),
}


def scenario_spec() -> dict[str, Field]:
    return {
        "name": Field((str,), None, "scenario name (default: the file name)", nullable=True),
        "description": Field((str,), "", "what the scenario is for"),
        "seed": Field((int,), 0, "random seed: same seed, same bytes out (< 2**63)",
                      check=non_negative, max=MAX_SEED),
        "budget": Field((float,), None, "target mean tokens per query (the token budget); "
                        "required unless budget_utilisation is given; at most "
                        f"{MAX_BUDGET:g}", nullable=True, check=positive, max=MAX_BUDGET),
        "budget_utilisation": Field((float,), None, "give the budget as a token rate instead: "
                                    "this share of the engine's decode throughput at full "
                                    "batch (docs/online-vs-batch.md); budget is then derived "
                                    "(rate / arrival rate) and any given budget replaced",
                                    nullable=True, check=positive),
        "traces": Field((dict,), doc="trace sets and traffic mix"),
        "predictor": Field((dict,), None, "what policies learn of tau", nullable=True),
        "arrivals": Field((dict,), doc="arrival process"),
        "engine": Field((dict,), None, "GPU replicas and step-time model", nullable=True),
        "slo": Field((dict,), None, "latency limits for goodput (vllm bench --goodput)",
                     nullable=True),
        "policies": Field((list,), doc="policies to compare, by name or {name: ..., params}"),
    }


SECTION_SPECS = {
    "traces": lambda: TRACES_SPEC,
    "predictor": lambda: PREDICTOR_SPEC,
    "arrivals": lambda: ARRIVALS_SPEC,
    "engine": _engine_spec,
    "slo": lambda: SLO_SPEC,
}


def scenarios_dir() -> Path:
    return Path(str(resources.files("scenarios")))


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in scenarios_dir().glob("*.yaml"))


def resolve_scenario_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError("scenario file not found; give a path to a YAML file or one of: "
                            + ", ".join(shipped_scenarios()), where=str(p))
        return p
    shipped = scenarios_dir() / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    close = difflib.get_close_matches(name_or_path, shipped_scenarios(), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown scenario '{name_or_path}'; {hint}shipped: "
                    f"{', '.join(shipped_scenarios())}, or give a path to a .yaml file")


def _check_policies(items, where: str) -> list[dict]:
    if not items:
        raise UserError("expected a non-empty list of policies", where=where, field="policies")
    out, labels = [], set()
    for k, item in enumerate(items):
        path = f"policies[{k}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UserError("expected a policy name or a mapping with 'name'", where=where, field=path)
        name = item["name"]
        if name not in REGISTRY:
            close = difflib.get_close_matches(name, list(REGISTRY), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(f"unknown policy '{name}'; {hint}allowed: {', '.join(sorted(REGISTRY))}",
                            where=where, field=f"{path}.name")
        label = item.get("label", name)
        if not isinstance(label, str) or not label:
            raise UserError("expected a non-empty string", where=where, field=f"{path}.label")
        if label in labels:
            raise UserError(f"label '{label}' used twice; give each entry its own 'label'",
                            where=where, field=f"{path}.label")
        labels.add(label)
        params = {k2: v for k2, v in item.items() if k2 not in ("name", "label")}
        params = check(params, REGISTRY[name].PARAMS, where=where, path=path)
        problem = REGISTRY[name].check_params(params)
        if problem:
            raise UserError(problem, where=where, field=path)
        out.append({"name": name, "label": label, **params})
    return out


def validate_scenario(data, *, where: str, default_name: str = "scenario") -> dict:
    """Check a scenario mapping and return it fully resolved (every default filled in)."""
    top = check(data, scenario_spec(), where=where)
    for section, spec in SECTION_SPECS.items():
        top[section] = check(top[section], spec(), where=where, path=section)
    check_arrivals(top["arrivals"], where)
    top["policies"] = _check_policies(top["policies"], where)
    top["name"] = top["name"] or default_name
    if top["budget"] is None and top["budget_utilisation"] is None:
        raise UserError("missing; expected a number (mean tokens per query), or give "
                        "budget_utilisation", where=where, field="budget")
    return top


def apply_overrides(data: dict, overrides: dict[str, object]) -> dict:
    """Set dotted keys (``arrivals.rate``) in a raw scenario mapping, creating sections."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[leaf] = value
    return data


def load_scenario(name_or_path: str, overrides: dict[str, object] | None = None) -> dict:
    """Load, override and validate a scenario by shipped name or path."""
    path = resolve_scenario_path(name_or_path)
    data = read_yaml(path, "scenario")
    if overrides:
        data = apply_overrides(data, overrides)
    return absolute_paths(validate_scenario(data, where=str(path), default_name=path.stem), path)


def _absolute(ref: str, scenario_path: Path) -> str:
    """A relative file reference as an absolute path: from the current folder if it exists
    there, else from the scenario's folder (so a saved run folder's scenario reruns anywhere)."""
    p = Path(ref)
    if p.is_absolute():
        return ref
    if not p.exists() and (scenario_path.parent / p).exists():
        p = scenario_path.parent / p
    return str(p.resolve()) if p.exists() else ref  # a missing file is reported where it is read


def absolute_paths(sc: dict, scenario_path: Path) -> dict:
    """Resolve every file a scenario names (``.parquet`` trace sets, the arrival trace, the
    step table) one way; the resolved scenario, saved as a run's scenario.yaml, holds them
    absolute."""
    sets = sc["traces"]["sets"]
    sc["traces"]["sets"] = [_absolute(x, scenario_path) if x.endswith(".parquet") else x
                            for x in sets]
    trace = sc["arrivals"].get("trace")
    if trace and trace not in TRACE_ALIASES:
        sc["arrivals"]["trace"] = _absolute(trace, scenario_path)
    if sc["engine"].get("step_table"):
        sc["engine"]["step_table"] = _absolute(sc["engine"]["step_table"], scenario_path)
    return sc


def describe_fields() -> str:
    """Every scenario field with what it allows, its meaning and default (for help and README)."""
    lines = []

    def emit(prefix: str, spec: dict[str, Field]) -> None:
        for key, f in spec.items():
            if f.default is REQUIRED:
                tail = " (required)"
            elif f.default is None or f.default == "":
                tail = ""
            else:
                tail = f" (default {f.default})"
            lines.append(f"  {prefix}{key}: {f.describe()}; {f.doc}{tail}")

    emit("", scenario_spec())
    for section, spec in SECTION_SPECS.items():
        emit(f"{section}.", spec())
    for name, cls in sorted(REGISTRY.items()):
        emit(f"policies[{name}].", cls.PARAMS)
    return "\n".join(lines)


__all__ = ["load_scenario", "validate_scenario", "apply_overrides", "shipped_scenarios",
           "describe_fields"]
