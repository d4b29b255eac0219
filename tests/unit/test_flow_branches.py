"""Parallel groups in the flow model: how they read from TOML, their order, and how the
checker judges compensation and resume with branches (order between branches free,
order within a branch and around the group fixed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import compensation_order, judge_instance, judge_rollback
from graduate.errors import FlowError
from graduate.flow import (
    Branch,
    Flow,
    Parallel,
    flow_from_dict,
    flow_to_dict,
    load_flow,
    validate,
)
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Outcome, PointReached

FLOWS = Path(__file__).parent.parent / "flows"


@pytest.fixture
def flow() -> Flow:
    return load_flow(FLOWS / "branches.toml")


def test_a_group_reads_as_branches_each_step_its_own_unless_it_names_one(flow: Flow) -> None:
    group = flow.node("provision")
    assert isinstance(group, Parallel)
    assert [(b.name, [s.name for s in b.steps]) for b in group.branches] == [
        ("portal", ["open_portal", "grant_access"]),
        ("open_account", ["open_account"]),
        ("welcome", ["welcome"]),
    ]
    assert [s.name for s in flow.steps] == [
        "create_record", "open_portal", "grant_access", "open_account", "welcome", "activate"]
    assert flow.node("grant_access").compensation == "portal.revoke"  # type: ignore[union-attr]
    assert flow.branch_of("grant_access") == (group, group.branches[0])
    assert flow.branch_of("activate") is None


def test_a_group_survives_the_json_form(flow: Flow) -> None:
    again = validate(flow_from_dict(flow_to_dict(flow)))
    assert again.nodes == flow.nodes


def test_the_order_around_and_inside_a_group(flow: Flow) -> None:
    assert flow.before("grant_access") == ("create_record", "open_portal")
    assert flow.before("open_account") == ("create_record",)
    assert set(flow.before("activate")) == {
        "create_record", "open_portal", "grant_access", "open_account", "welcome"}
    assert flow.beside("grant_access") == ("open_account", "welcome")
    assert flow.beside("activate") == ()
    assert flow.following("create_record") == ("open_portal", "open_account", "welcome")
    assert flow.following("open_portal") == ("grant_access",)
    assert flow.following("grant_access") == ("activate",)
    assert flow.following("activate") == ()


def test_a_group_of_one_branch_is_refused(flow: Flow) -> None:
    group = flow.node("provision")
    assert isinstance(group, Parallel)
    lone = Parallel("provision", (Branch("all", group.steps),))
    with pytest.raises(FlowError, match="at least two branches"):
        validate(replace(flow, nodes=(flow.nodes[0], lone, flow.nodes[2])))


# ---------------------------------------------------------------------------- the checker

_IDS = iter(range(1, 1000))


def call(step: str, kind: EffectKind = "effect", at: float = 0.0, attempt: int = 1,
         outcome: Outcome = Outcome.APPLIED) -> EffectRecord:
    return EffectRecord(
        id=next(_IDS), run_id="r", flow="branches", instance_id="i", step=step, kind=kind,
        effect=f"x.{step}", attempt=attempt, idempotency_key=f"k:{step}:{kind}",
        correlation_id="c", trace_id="t", engine="e", worker_pid=1, started_at=at,
        finished_at=at + 0.1, outcome=outcome)


RECORD = InstanceRecord(instance_id="i", run_id="r", flow="branches", flow_source="",
                        engine="e", tenant_id="t", entity_id="e", date="20260101",
                        correlation_id="c", trace_id="t", started_at=0.0)


def test_compensations_between_branches_may_come_in_any_order(flow: Flow) -> None:
    applied = ["create_record", "open_account", "open_portal", "grant_access"]
    assert compensation_order(flow, applied, [
        "open_account", "grant_access", "open_portal", "create_record"]) == []
    assert compensation_order(flow, applied, [
        "grant_access", "open_portal", "open_account", "create_record"]) == []


def test_a_compensation_out_of_the_branch_order_or_before_the_group_is_named(
        flow: Flow) -> None:
    applied = ["create_record", "open_portal", "grant_access", "open_account"]
    [inside] = compensation_order(flow, applied, [
        "open_portal", "grant_access", "open_account", "create_record"])
    assert "reverse is open_account, grant_access, open_portal, create_record" in inside
    assert "between parallel branches any order is right" in inside
    assert compensation_order(flow, applied, [
        "grant_access", "create_record", "open_portal", "open_account"]) != []


def test_an_instance_compensated_out_of_order_is_failed(flow: Flow) -> None:
    effects = [call("create_record", at=1), call("open_portal", at=2),
               call("open_account", at=2),
               call("grant_access", at=3, outcome=Outcome.PERMANENT_ERROR),
               call("create_record", "compensation", at=4),
               call("open_portal", "compensation", at=5),
               call("open_account", "compensation", at=6)]
    status = InstanceStatus(InstanceState.COMPENSATED, detail="step grant_access failed")
    verdict = judge_instance(flow, RECORD, effects, status, engine_holds=False)
    assert verdict.verdict.value == "failed"
    assert "compensations ran in the order create_record" in verdict.reason
    rollback = judge_rollback(flow, effects, status, cancelled_at=3.5)
    assert any("compensations ran in the order" in p for p in rollback.problems)


def test_a_branch_beside_the_step_in_flight_resuming_first_is_exact(flow: Flow) -> None:
    effects = [call("create_record", at=1), call("open_portal", at=2),
               call("open_account", at=2.5),
               call("welcome", at=6), call("grant_access", at=7, attempt=2)]
    status = InstanceStatus(InstanceState.RUNNING)
    reached = PointReached("i", "grant_access", "before-effect", 1, 3.0)
    verdict = judge_instance(flow, RECORD, effects, status, engine_holds=True,
                             reached=reached, fault_at=5.0)
    assert verdict.resume is not None
    assert verdict.resume.exact
    assert verdict.resume.resumed_at == "welcome"
    assert verdict.resume.reran == ()
    effects.append(call("open_account", at=8, attempt=2))  # it had landed: a re-run
    again = judge_instance(flow, RECORD, effects, status, engine_holds=True,
                           reached=reached, fault_at=5.0)
    assert again.resume is not None
    assert again.resume.reran == ("open_account",)
