"""A deploy of reordered workflow code with several instances in flight on Temporal:
pinned to worker deployment versions, guarded by patching, and without any guard.

The versions are read from the server's history (the build ID that completed each
workflow task, and so scheduled each step), as stored in the evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, TimelineEvent, run_chaos
from graduate.check import Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.runner import RunOptions, approve_all
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

INSTANCES = 3


def deploy(settings: Settings, path: Path, **guard: bool) -> ChaosResult:
    flow = load_flow(path)
    plan = parse_plan("deploy-change", "approval:during-wait", flow, restart_delay=0.5,
                      options={"change": "reorder", **guard}, hit="all")
    options = ChaosOptions(run=RunOptions(flow=str(path), engine="temporal", timeout=30,
                                          instances=INSTANCES, decisions=approve_all(flow)),
                           plan=plan)
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))


def steps_by_version(result: ChaosResult) -> dict[str, list[tuple[str, str]]]:
    """Each instance's steps, in the order its workflow scheduled them, with the build
    ID that scheduled each, from the stored evidence."""
    assert result.evidence is not None
    record = EvidenceStore(result.evidence.parents[1]).load_run(result.run_id)
    return {i.verdict.instance_id: [(e.detail, e.version) for e in i.history
                                    if e.kind == "activity_task_scheduled"]
            for i in record.instances}


def result_timeline(result: ChaosResult) -> list[TimelineEvent]:
    assert result.evidence is not None
    return list(EvidenceStore(result.evidence.parents[1]).load_run(result.run_id).timeline)


def test_pinned_instances_finish_on_their_version_while_new_ones_start_on_the_new(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = deploy(settings, flow_file("chaos"), pinned=True)

    assert result.applicable, result.reason
    assert result.fired, result.reason
    by_id = {i.instance_id: i for i in result.instances}
    assert len(by_id) == INSTANCES + 1  # the instances in flight, and one after the deploy
    steps = steps_by_version(result)
    in_flight, [after] = sorted(by_id)[:INSTANCES], sorted(by_id)[INSTANCES:]
    for instance_id in in_flight:
        assert by_id[instance_id].verdict is Verdict.COMPLETED, by_id[instance_id].reason
        assert steps[instance_id] == [("crm.create_record", "v1"), ("crm.reserve", "v1"),
                                      ("crm.activate", "v1"), ("notify.send", "v1")]
    assert by_id[after].verdict is Verdict.COMPLETED, by_id[after].reason
    # The new code, reordered, on the new version's workers.
    assert steps[after] == [("crm.reserve", "v2"), ("crm.create_record", "v2"),
                            ("crm.activate", "v2"), ("notify.send", "v2")]
    assert not any("Nondeterminism" in i.reason for i in result.instances)
    # The timeline, which every report shows, says it too.
    ran = {e.instance: e.detail for e in result_timeline(result) if e.kind == "versions-ran"}
    assert ran[after] == ("crm.reserve on v2, crm.create_record on v2, crm.activate on v2, "
                          "notify.send on v2")
    assert result.verdict.passed, result.verdict.failures


def test_the_same_deploy_unguarded_breaks_every_instance_in_flight(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = deploy(settings, flow_file("chaos"))

    assert result.applicable, result.reason
    assert result.fired, result.reason
    assert len(result.instances) == INSTANCES
    # Replay predicted it before the deploy, instance by instance (`graduate replay`'s check).
    predicted = {e.instance: e.detail for e in result_timeline(result)
                 if e.kind == "replay-predicted"}
    for instance in result.instances:
        assert instance.verdict is Verdict.STUCK
        assert "Nondeterminism" in instance.reason
        # Event 5, the first step's scheduling, the first command of the workflow's
        # first task (the memo's policy is in the input: no patch marker before it).
        assert predicted[instance.instance_id].startswith(
            f"{instance.instance_id}: breaks at event 5: ")
    assert not result.verdict.passed


def test_the_same_deploy_guarded_by_patching_replays_and_completes(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The other guard: one worker version whose code keeps the old steps for the
    instances that started on them (`workflow.patched`), as replay predicted."""
    result = deploy(settings, flow_file("chaos"), versioned=True)

    assert result.fired, result.reason
    predicted = {e.instance: e.detail for e in result_timeline(result)
                 if e.kind == "replay-predicted"}
    assert len(result.instances) == INSTANCES
    for instance in result.instances:
        assert instance.verdict is Verdict.COMPLETED, instance.reason
        assert predicted[instance.instance_id] == (f"{instance.instance_id}: replays on the "
                                                   "new code")
    assert result.verdict.passed, result.verdict.failures
