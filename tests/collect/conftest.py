"""Fixtures for the collector tests: fake vLLM, fake server, small problem files, shared data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collect_fakes import (  # noqa: E402
    FakeOpenAIServer,
    FakeVllmControl,
    ServerControl,
    make_fake_vllm,
    write_addition_problems,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; the test is skipped when it is absent."""
    data = SHARED / "data"
    if not (data / "problems").is_dir():
        pytest.skip("../shared/data is not present")
    return data.resolve()


@pytest.fixture(autouse=True)
def clearsim_home(tmp_path, monkeypatch) -> Path:
    """Every test writes its traces under a temporary $CLEARSIM_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("CLEARSIM_HOME", str(home))
    monkeypatch.delenv("CLEARSIM_PROBLEMS_DIR", raising=False)
    return home


@pytest.fixture
def fake_vllm(monkeypatch) -> FakeVllmControl:
    """Installs the fake ``vllm`` module for the test; returns its control object."""
    control = FakeVllmControl()
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm(control))
    return control


@pytest.fixture
def fake_server():
    """A fake OpenAI-compatible server on loopback (stops at the end of the test, or by itself)."""
    with FakeOpenAIServer(ServerControl(), lifetime=60.0) as server:
        yield server


@pytest.fixture
def addition(tmp_path) -> Path:
    """Twelve 'What is A plus B?' problems the fake model can answer."""
    return write_addition_problems(tmp_path / "addition.jsonl", 12)
