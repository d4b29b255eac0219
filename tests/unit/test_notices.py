"""A wait's notices, tied to how it ended: how a flow declares them, how the pilot's key
without a step stays unique per effect, and how the checker judges the ledger's calls of
them (hand-built rows: the engines' own tests are tests/contract/test_pilot.py and
test_spikes.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.conftest import PILOT, effect_row, instance_row

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import FaultFacts, judge_instance, judge_rollback, judge_run
from graduate.errors import FlowError
from graduate.flow import (
    NOTICE_RETRY,
    Flow,
    InstanceRequest,
    Wait,
    flow_from_dict,
    flow_to_dict,
    load_flow,
)
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Ledger, Outcome

NOTICES = '\nnotices = { rejected = "mail.rejected", expired = "mail.expired" }'
STARTED = 1000.0


def noticed(write_flow: Callable[..., Path], line: str = NOTICES) -> Path:
    return write_flow([('deadline = "1h"', f'deadline = "1h"{line}')])


@pytest.fixture
def flow(write_flow: Callable[..., Path]) -> Flow:
    return load_flow(noticed(write_flow))


@pytest.fixture
def request_1() -> InstanceRequest:
    return InstanceRequest("i1", "r", "tenant7", "partner42", "20250102", "c", "x")


# ---------------------------------------------------------------------------- the model


def test_a_wait_declares_a_notice_per_ending_each_a_step_of_its_own(flow: Flow) -> None:
    wait = flow.node("approval")

    assert isinstance(wait, Wait)
    rejected, expired = wait.notice_step("rejected"), wait.notice_step("expired")
    assert rejected is not None
    assert expired is not None
    assert (rejected.name, rejected.effect) == ("approval.rejected_notice", "mail.rejected")
    assert (expired.name, expired.effect) == ("approval.expired_notice", "mail.expired")
    assert rejected.retry == NOTICE_RETRY
    # Engines find them by name; nothing counts them as steps to complete or compensate.
    assert flow.node("approval.expired_notice") == expired
    assert [s.name for s in flow.steps] == ["create", "notify"]
    assert flow.is_wait_effect("approval.rejected_notice")
    assert not flow.is_wait_effect("create")


def test_the_engines_reason_names_the_ending_and_its_notice(flow: Flow) -> None:
    assert flow.ended_at("rejected at approval") == (flow.node("approval"), "rejected")
    assert flow.ended_at("deadline of approval passed") == (flow.node("approval"), "expired")
    # A failed compensation keeps the ending at the front of the reason.
    failed = "rejected at approval; compensation of create failed: refused"
    assert flow.notice_for(failed) == flow.node("approval.rejected_notice")
    assert flow.ended_at("step create failed: refused") is None
    assert flow.ended_at("rejected at approval_two") is None


def test_notices_round_trip_through_json_and_flows_without_them_read_the_same(
        flow: Flow, write_flow: Callable[..., Path]) -> None:
    assert flow_from_dict(json.loads(json.dumps(flow_to_dict(flow)))) == replace(
        flow, source="")
    plain = flow_to_dict(load_flow(write_flow()))
    assert all("notices" not in node for node in plain["nodes"])


@pytest.mark.parametrize(("line", "fragments"), [
    ('\nnotices = { approved = "mail.approved" }',
     ["unknown key(s) ['approved']", "rejected or expired"]),
    ('\nnotices = { rejected = "mailer" }',
     ["notices.rejected 'mailer' must read SYSTEM.OPERATION"]),
    ('\nnotices = { expired = "sms.send" }',
     ["notices.expired 'sms.send' goes to system 'sms', which is not declared"]),
    ('\non_timeout = "fail"\nnotices = { expired = "mail.expired" }',
     ["notices.expired is sent after the compensations of that ending",
      "on_timeout = 'fail'", "set on_timeout = \"compensate\""]),
    ('\nnotices = "mail.rejected"', ["notices = 'mail.rejected' must be a table"]),
])
def test_a_bad_notice_is_refused_saying_what_to_fix(
        write_flow: Callable[..., Path], line: str, fragments: list[str]) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(noticed(write_flow, line))

    missing = [f for f in fragments if f not in str(caught.value)]
    assert not missing, f"{caught.value} lacks {missing}"


# ---------------------------------------------------------------------------- the pilot's key


def test_the_pilot_uses_the_dealix_key_as_written(request_1: InstanceRequest) -> None:
    pilot = load_flow(PILOT)

    assert pilot.idempotency_key == "{tenant_id}:{workflow_type}:{entity_id}:{yyyymmdd}"
    assert pilot.key_for("update_crm", request_1) == (
        "tenant7:partner_approval:partner42:20250102")
    # Each of its calls goes to an operation of its own: the key stays unique per effect.
    assert len(set(pilot.operations)) == len(pilot.operations)


def test_a_key_without_the_step_is_remembered_per_operation(
        tmp_path: Path, request_1: InstanceRequest) -> None:
    """The draft, its update, its void and the notice share one key and all apply; a
    repeat of one operation with the key is absorbed, on a system that honours keys."""
    pilot = load_flow(PILOT)
    ledger = Ledger(str(tmp_path / "ledger.sqlite3"))
    ledger.register(pilot, request_1, "temporal")

    def call(name: str, kind: EffectKind = "effect") -> Outcome:
        step = pilot.node(name)
        assert not isinstance(step, Wait)
        return ledger.call(pilot, request_1, step, attempt=1, engine="temporal",  # type: ignore[arg-type]
                           kind=kind)

    assert [call("create_packet"), call("update_crm"), call("update_crm", "compensation"),
            call("create_packet", "compensation")] == [Outcome.APPLIED] * 4
    assert call("update_crm") is Outcome.ABSORBED
    assert call("create_packet", "compensation") is Outcome.ABSORBED
    # notify honours no key: a second notice is a second email.
    assert [call("approval.rejected_notice"), call("approval.rejected_notice")] == [
        Outcome.APPLIED, Outcome.APPLIED]
    assert {e.idempotency_key for e in ledger.effects(instance_id="i1")} == {
        "tenant7:partner_approval:partner42:20250102"}


# ---------------------------------------------------------------------------- the checker


def record() -> InstanceRecord:
    return instance_row("temporal", STARTED)

def call(step: str, at: float, *, kind: EffectKind = "effect",
         outcome: Outcome = Outcome.APPLIED) -> EffectRecord:
    return effect_row(step, STARTED + at, effect=f"x.{step}", engine="temporal", key="k",
                      kind=kind, outcome=outcome)

def ended(reason: str, state: InstanceState = InstanceState.COMPENSATED) -> InstanceStatus:
    return InstanceStatus(state, ("create",), finished_at=STARTED + 100, detail=reason)


REJECTED = ended("rejected at approval")
EXPIRED = ended("deadline of approval passed")
UNDONE = [call("create", 1), call("create", 10, kind="compensation")]


def judged(flow: Flow, effects: list[EffectRecord], status: InstanceStatus,
           ) -> tuple[list[str], list[tuple[str, bool, int]]]:
    verdict = judge_instance(flow, record(), effects, status, engine_holds=False)
    run = judge_run([verdict], fault=FaultFacts(planned=False, fired=False,
                                                expects_resume=False))
    return list(run.failures), [(n.step, n.expected, n.applied) for n in verdict.notices]


def test_a_rejection_compensated_then_noticed_once_passes(flow: Flow) -> None:
    failures, notices = judged(flow, [*UNDONE, call("approval.rejected_notice", 11)],
                               REJECTED)

    assert failures == []
    assert notices == [("approval.rejected_notice", True, 1)]


def test_an_expected_notice_never_sent_fails_the_run(flow: Flow) -> None:
    failures, notices = judged(flow, UNDONE, EXPIRED)

    assert notices == [("approval.expired_notice", True, 0)]
    assert failures == ["i1: expired notice of approval missing: the instance ended "
                        "expired and it was never sent (corr)"]


def test_a_notice_whose_calls_all_failed_is_missing(flow: Flow) -> None:
    effects = [*UNDONE, call("approval.rejected_notice", 11, outcome=Outcome.PERMANENT_ERROR)]
    status = ended("rejected at approval; approval.rejected_notice failed: refused",
                   InstanceState.FAILED)

    failures, notices = judged(flow, effects, status)

    assert notices == [("approval.rejected_notice", True, 0)]
    assert any("rejected notice of approval missing" in f and "its 1 call(s) failed" in f
               for f in failures)


def test_a_notice_sent_twice_to_a_system_that_honours_no_key_is_a_duplicate(
        flow: Flow) -> None:
    effects = [*UNDONE, call("approval.rejected_notice", 11),
               call("approval.rejected_notice", 12)]

    failures, notices = judged(flow, effects, REJECTED)

    assert notices == [("approval.rejected_notice", True, 2)]
    assert failures == ["i1: approval.rejected_notice (effect) applied 2 times, an "
                        "unabsorbed duplicate (corr)"]


def test_a_repeat_its_key_absorbed_is_no_duplicate(flow: Flow) -> None:
    effects = [*UNDONE, call("approval.rejected_notice", 11),
               call("approval.rejected_notice", 12, outcome=Outcome.ABSORBED)]

    failures, _ = judged(flow, effects, REJECTED)

    assert failures == []


def test_the_notice_of_an_ending_that_did_not_happen_fails(flow: Flow) -> None:
    failures, notices = judged(flow, [*UNDONE, call("approval.expired_notice", 11)],
                               REJECTED)

    assert notices == [("approval.rejected_notice", True, 0),
                       ("approval.expired_notice", False, 1)]
    assert "i1: expired notice of approval sent, but the instance did not end expired " \
           "there (corr)" in failures


def test_a_notice_before_the_compensations_landed_fails(flow: Flow) -> None:
    effects = [call("create", 1), call("approval.rejected_notice", 5),
               call("create", 10, kind="compensation")]

    failures, _ = judged(flow, effects, REJECTED)

    assert failures == ["i1: rejected notice of approval sent before the compensations had "
                        "landed (corr)"]


def test_an_approved_or_failed_instance_owes_no_notice(flow: Flow) -> None:
    completed = InstanceStatus(InstanceState.COMPLETED, ("create", "approval", "notify"),
                               finished_at=STARTED + 100)
    failures, notices = judged(flow, [call("create", 1), call("notify", 5)], completed)
    assert (failures, notices) == ([], [])

    failed_step = ended("step create failed: refused")
    assert judged(flow, UNDONE, failed_step)[1] == []


def test_the_notice_is_no_step_to_compensate_or_resume(flow: Flow) -> None:
    effects = [*UNDONE, call("approval.rejected_notice", 11)]

    rollback = judge_rollback(flow, effects, REJECTED, cancelled_at=STARTED + 5)
    verdict = judge_instance(flow, record(), effects, REJECTED, engine_holds=False)

    assert rollback.applied == ("create",)
    assert verdict.verdict.value == "compensated"


# ---------------------------------------------------------------------------- a read-only step


def test_a_read_only_step_needs_no_compensation_and_a_rollback_leaves_it(
        write_flow: Callable[..., Path]) -> None:
    flow = load_flow(write_flow([('effect = "mail.send"',
                                  'effect = "mail.send"\nread_only = true')]))
    effects = [call("create", 1), call("notify", 2), call("create", 10, kind="compensation")]

    rollback = judge_rollback(flow, effects, REJECTED, cancelled_at=STARTED + 5)

    assert flow.node("notify").read_only  # type: ignore[union-attr]
    assert rollback.problems == ()
    assert flow_from_dict(json.loads(json.dumps(flow_to_dict(flow)))) == replace(
        flow, source="")


def test_a_read_only_step_with_a_compensation_is_refused(
        write_flow: Callable[..., Path]) -> None:
    with pytest.raises(FlowError, match="read_only = true says the step changes nothing, "
                                        "yet \\[compensations\\] undoes it"):
        load_flow(write_flow([('effect = "crm.create"\n',
                               'effect = "crm.create"\nread_only = true\n')]))
