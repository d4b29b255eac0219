"""The pytest plugin runs an engine it learns of from the registry alone: it resolves
the flow through `graduate` once, and asks for the servers the engine declares, none
for the toy engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from graduate import apps
from graduate.adapters import register
from graduate.adapters.registry import unregister
from graduate.flow import Flow, load_flow
from graduate.testing.plugin import ChaosRunner
from tests.conftest import FlowFactory
from tests.engines.toy import TOY


@pytest.fixture
def toy() -> Iterator[str]:
    register(TOY)
    yield TOY.name
    unregister(TOY.name)


def test_the_plugin_runs_a_registered_engine_reading_its_flow_once(
        toy: str, chaos: ChaosRunner, flow_file: FlowFactory, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(flow_file())
    loads: list[str] = []

    def counted(ref: str, **named: Any) -> Flow:
        loads.append(str(ref))
        return load_flow(ref, **named)

    monkeypatch.setattr(apps, "load_flow", counted)
    outcome = chaos(path, engine=toy, timeout=60)

    outcome.assert_ok()
    # Each flow once: the one run, and those of the project's declared apps.
    assert loads.count(path) == 1
    assert len(loads) == len(set(loads)), loads
    assert "broker" not in request.fixturenames
    assert "temporal_server" not in request.fixturenames
