"""Engine presets (``presets.yaml``): step-time coefficients and limits per (model, GPU), with
their provenance, so a scenario names a preset instead of copying numbers."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml


@lru_cache(maxsize=1)
def presets() -> dict[str, dict]:
    text = resources.files("sim").joinpath("presets.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)
