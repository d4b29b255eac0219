"""What the chaos tests share: a chaos run of a test flow with a fault at a point, the
ledger's calls of one instance, and the check that a run left no process behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.check import InstanceVerdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import Decision, RunOptions, approve_all
from graduate.runs.timeline import TimelineEvent
from tests.conftest import processes_mentioning


@pytest.fixture
def no_orphans(tmp_path: Path) -> Iterator[None]:
    """After the test, no process mentions its folder: the harness stopped all it started.
    (A module takes it with `pytest.mark.usefixtures("no_orphans")`.)"""
    yield
    assert processes_mentioning(str(tmp_path)) == [], "the harness left processes behind"


def chaos_at(settings: Settings, path: Path, engine: str, fault: str, at: str, *,
             instances: int = 1, hit: str = "one", profile: str = "tuned",
             decisions: Mapping[str, Decision] | None = None,
             interrupt_at: str | None = None,
             on_event: Callable[[TimelineEvent], None] | None = None) -> ChaosResult:
    """One chaos run of the flow at `path`: `fault` at `at` (STEP:POINT), every wait
    approved unless `decisions` say otherwise, the operator's restart after 0.5 s, a 90 s
    deadline; its evidence in the project's folder."""
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, instances=instances, timeout=90,
                       decisions={**approve_all(flow), **(decisions or {})},
                       interrupt_at=interrupt_at),
        plan=parse_plan(fault, at, flow, restart_delay=0.5, hit=hit), profile=profile)
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"),
                     on_event=on_event)


def calls(settings: Settings, instance: InstanceVerdict, kind: str) -> list[tuple[str, Outcome]]:
    """The instance's calls of one kind (effect, compensation), as (step, outcome)."""
    return [(e.step, e.outcome) for e in Ledger(settings.ledger).effects(
        instance_id=instance.instance_id) if e.kind == kind]
