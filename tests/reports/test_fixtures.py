"""The hand-made evidence the report tests start from has the shape of a real record:
a real chaos run is stored by the harness, and every key of one is in the other, so
the fixture cannot drift from what `graduate chaos` writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, run_chaos
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.runner import RunOptions, approve_all
from tests.adr.conftest import Project, project  # noqa: F401 (the fixture, reused)
from tests.conftest import FlowFactory

FIXTURE = Path(__file__).parent / "data" / "run-temporal-kill-worker.json"
# Maps whose keys are data (setting names, package names, the flow's own definition),
# not the record's shape.
FREE_FORM = ("settings", "environment.host", "environment.packages", "environment.servers",
             "environment.services", "options.decisions", "flow.definition")


def key_paths(value: Any, prefix: str = "") -> set[str]:
    if prefix in FREE_FORM:
        return set()
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            found |= {path} | key_paths(item, path)
        return found
    if isinstance(value, list):
        return set().union(*(key_paths(item, f"{prefix}[]") for item in value))
    return set()


@pytest.mark.slow
def test_the_report_and_adr_fixtures_have_the_shape_of_a_real_run_record(
        settings: Settings, flow_file: FlowFactory,
        project: Project) -> None:  # noqa: F811 (the fixture imported above)
    """The report tests' JSON and the ADR tests' built runs (`Project.run`, read back
    through the typed record's loader) against one real chaos run."""
    path = flow_file("chaos")
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine="temporal", instances=3, timeout=60,
                       decisions=approve_all(flow)),
        plan=parse_plan("kill-worker", "activate:before-effect", flow, restart_delay=0.5))
    store = EvidenceStore(settings.project_dir / "evidence")
    result = run_chaos(settings, options, store)

    real = key_paths(store.load_run(result.run_id).to_dict())
    fixture = key_paths(json.loads(FIXTURE.read_text()))

    assert real - fixture == set(), "the fixture lacks what a real record has"
    assert fixture - real == set(), "the fixture has what no real record has"
    built = key_paths(project.store.load_run(project.run(instances=3)).to_dict())
    assert real - built == set(), "the ADR tests' runs lack what a real record has"
    assert built - real == set(), "the ADR tests' runs have what no real record has"
