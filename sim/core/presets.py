"""Engine presets (``presets.yaml``): step-time model, limits and CPU overheads per (model, GPU),
with their provenance, so a scenario names a preset instead of copying numbers.

:func:`engine_config` turns a scenario's resolved ``engine`` section (preset name plus
overrides) into an :class:`~sim.core.engine.EngineConfig`.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml


@lru_cache(maxsize=1)
def presets() -> dict[str, dict]:
    text = resources.files("sim").joinpath("presets.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def step_model(pre: dict, eng: dict | None = None, where: str | None = None):
    """The preset's step model, with a scenario's overrides (``c0_ms``, ``c1_us``, ...) applied."""
    from sim.core.stepmodels import LinearStepModel, TableStepModel

    eng = eng or {}
    kind = eng.get("step_model") or pre.get("step_model", "linear")
    if kind == "table":
        table = eng.get("step_table") or pre.get("table")
        if table is None:
            from sim.foundation.errors import UserError
            raise UserError("step_model 'table' needs engine.step_table (a CSV with tokens, step_ms)",
                            where=where, field="engine.step_table")
        path = Path(table)
        if not path.is_absolute() and not path.exists():
            shipped = Path(str(resources.files("sim"))) / table
            if shipped.exists():
                path = shipped
            elif where:
                path = Path(where).parent / table
        return TableStepModel.from_csv(path)

    def pick(key_override, scale_override, key_preset):
        v = eng.get(key_override)
        return (pre.get(key_preset, 0.0) if v is None else v * scale_override) * 1e-6

    return LinearStepModel(
        c0_s=pick("c0_ms", 1000.0, "c0_us"),
        c1_s=pick("c1_us", 1.0, "c1_us"),
        c2_s=pick("c2_us", 1.0, "c2_us"),
        c3_s=pick("c3_us", 1.0, "c3_us"),
    )


def engine_config(eng: dict, where: str | None = None):
    """The engine section of a resolved scenario, preset values filled in."""
    from sim.core.engine import EngineConfig

    pre = presets()[eng["preset"]]
    overhead_us = pre.get("request_overhead_us", 0.0) if eng.get("request_overhead_ms") is None \
        else eng["request_overhead_ms"] * 1000
    block = eng.get("block_size") or pre.get("block_size", 16)
    kv = eng.get("kv_blocks")
    if kv is None and pre.get("kv_capacity_tokens"):
        kv = int(pre["kv_capacity_tokens"]) // block
    if eng["max_num_batched_tokens"] < eng["max_num_seqs"]:
        from sim.foundation.errors import UserError
        raise UserError(f"got {eng['max_num_batched_tokens']}; must be >= max_num_seqs "
                        f"({eng['max_num_seqs']}), as vLLM requires", where=where,
                        field="engine.max_num_batched_tokens")
    return EngineConfig(
        step=step_model(pre, eng, where),
        max_num_seqs=eng["max_num_seqs"],
        max_num_batched_tokens=eng["max_num_batched_tokens"],
        request_overhead_s=overhead_us * 1e-6,
        replicas=eng["replicas"],
        routing=eng["routing"],
        kv_blocks=kv if kv else None,
        block_size=block,
        sample_s=eng.get("timeseries_s"),
    )
