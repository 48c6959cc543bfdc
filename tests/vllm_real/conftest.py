"""The real-vLLM tier: a tiny model built here, real vLLM (the ``vllm-cpu`` extra), loopback only.

Skipped as a whole when ``vllm`` is not importable (the README's install has no vLLM).  One
server is started for the session on 127.0.0.1 and always stopped.  Run it with
``pytest -m vllm tests/vllm_real`` in a venv that has the extra (docs/vllm-cpu.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]  # nothing to run without vLLM; the tier is skipped

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collect"))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session", autouse=True)
def _cpu_kv_space():
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from traces.collect.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    from traces.collect.vllm_server import VllmServer

    log = tmp_path_factory.mktemp("server") / "vllm.log"
    with VllmServer(tiny_model, max_num_seqs=8, max_model_len=1024, log_path=log) as srv:
        yield srv


@pytest.fixture
def clearsim_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARSIM_HOME", str(home))
    return home
