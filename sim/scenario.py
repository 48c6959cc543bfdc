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
from sim.errors import UserError
from sim.presets import presets
from sim.spec import REQUIRED, Field, check, non_negative, positive
from traces.predictors import PREDICTOR_SPEC


def _sets(v) -> str | None:
    if not v or not all(isinstance(s, str) and s for s in v):
        return "expected a non-empty list of trace set names (see 'clearsim traces list')"
    return None


TRACES_SPEC = {
    "sets": Field((list,), doc="trace set names (embedded or imported) or .parquet paths",
                  check=_sets),
    "mix": Field((dict,), None, "weight per dataset; null = every query equally likely",
                 nullable=True),
}
ARRIVALS_SPEC = {
    "process": Field((str,), "poisson", "arrival process", choices=("poisson",)),
    "rate": Field((float,), doc="mean arrivals per second", check=positive),
    "queries": Field((int,), doc="number of arriving queries (the run's horizon)", check=positive),
}


def _engine_spec() -> dict[str, Field]:
    return {
        "preset": Field((str,), "qwen2.5-math-7b-h100", "step-time preset (model, GPU)",
                        choices=tuple(presets())),
        "replicas": Field((int,), 1, "number of GPU replicas", check=positive),
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
    }


def scenario_spec() -> dict[str, Field]:
    return {
        "name": Field((str,), None, "scenario name (default: the file name)", nullable=True),
        "description": Field((str,), "", "what the scenario is for"),
        "seed": Field((int,), 0, "random seed: same seed, same bytes out", check=non_negative),
        "budget": Field((float,), doc="target mean tokens per query (the token budget)",
                        check=positive),
        "traces": Field((dict,), doc="trace sets and traffic mix"),
        "predictor": Field((dict,), None, "what policies learn of tau", nullable=True),
        "arrivals": Field((dict,), doc="arrival process"),
        "engine": Field((dict,), None, "GPU replicas and step-time model", nullable=True),
        "policies": Field((list,), doc="policies to compare, by name or {name: ..., params}"),
    }


SECTION_SPECS = {
    "traces": lambda: TRACES_SPEC,
    "predictor": lambda: PREDICTOR_SPEC,
    "arrivals": lambda: ARRIVALS_SPEC,
    "engine": _engine_spec,
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
        out.append({"name": name, "label": label, **params})
    return out


def validate_scenario(data, *, where: str, default_name: str = "scenario") -> dict:
    """Check a scenario mapping and return it fully resolved (every default filled in)."""
    top = check(data, scenario_spec(), where=where)
    for section, spec in SECTION_SPECS.items():
        top[section] = check(top[section], spec(), where=where, path=section)
    top["policies"] = _check_policies(top["policies"], where)
    top["name"] = top["name"] or default_name
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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where=f"{path}{line}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read ({exc.__class__.__name__})", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("expected a mapping of scenario fields", where=str(path))
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_scenario(data, where=str(path), default_name=path.stem)


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
