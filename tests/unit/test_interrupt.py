"""The flow's interrupt: how a flow declares it, how it is validated and stored, and how
the checker judges an interrupted instance (hand-built rows: the engines' own tests are
in tests/contract/test_interrupt.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from tests.unit.conftest import effect_row, instance_row, variant

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import FaultFacts, judge_instance, judge_interrupt, judge_run
from graduate.errors import ConfigError, FlowError
from graduate.flow import (
    INTERRUPT_NOTICE,
    NOTICE_RETRY,
    Flow,
    flow_from_dict,
    flow_to_dict,
    load_flow,
)
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Outcome
from graduate.runner import Decision, RunOptions, validate_options

INTERRUPT = '\n[interrupt]\nsignal = "red_flag"\nnotice = "mail.red_flag"\n'
STARTED = 1000.0
REASON = "interrupted by red_flag"


@pytest.fixture
def flow(write_flow: Callable[..., Path]) -> Flow:
    # MINI_FLOW with a second compensated step: create, approval, update, notify.
    return load_flow(write_flow(
        [('[[nodes]]\nstep = "notify"',
          '[[nodes]]\nstep = "update"\neffect = "crm.update"\n\n[[nodes]]\nstep = "notify"'),
         ('create = "crm.delete"', 'create = "crm.delete"\nupdate = "crm.restore"')],
        INTERRUPT))


# ---------------------------------------------------------------------------- the model


def test_a_flow_declares_an_interrupt_with_its_signal_reason_and_notice(flow: Flow) -> None:
    assert flow.interrupt is not None
    assert (flow.interrupt.signal, flow.interrupt.reason) == ("red_flag", REASON)
    notice = flow.interrupt.notice_step
    assert notice is not None
    assert (notice.name, notice.effect, notice.retry) == (INTERRUPT_NOTICE, "mail.red_flag",
                                                          NOTICE_RETRY)
    # Engines find the notice by name; nothing counts it as a step to run or compensate.
    assert flow.node(INTERRUPT_NOTICE) == notice
    assert flow.is_wait_effect(INTERRUPT_NOTICE)
    assert [s.name for s in flow.steps] == ["create", "update", "notify"]
    assert "mail.red_flag" in flow.operations


def test_the_engines_reason_says_the_interrupt_ended_it_and_owes_its_notice(
        flow: Flow) -> None:
    assert flow.interrupted(REASON)
    assert flow.interrupted(f"{REASON}; compensation of create failed: refused")
    assert not flow.interrupted("interrupted by red_flag_two")
    assert not flow.interrupted("rejected at approval")
    assert flow.notice_for(REASON) == flow.node(INTERRUPT_NOTICE)
    assert flow.ended_at(REASON) is None


def test_an_interrupt_round_trips_through_json_and_flows_without_one_read_the_same(
        flow: Flow, mini_flow: Flow) -> None:
    assert flow_from_dict(json.loads(json.dumps(flow_to_dict(flow)))) == replace(
        flow, source="")
    assert "interrupt" not in flow_to_dict(mini_flow)
    assert mini_flow.interrupt is None
    assert mini_flow.notice_for(REASON) is None


def test_an_interrupt_without_a_notice_owes_none(write_flow: Callable[..., Path]) -> None:
    flow = load_flow(write_flow(append='\n[interrupt]\nsignal = "cancel"\n'))

    assert flow.interrupt is not None
    assert flow.interrupt.notice_step is None
    assert flow.notice_for("interrupted by cancel") is None
    assert not flow.is_wait_effect(INTERRUPT_NOTICE)


@pytest.mark.parametrize(("table", "message"), [
    ('[interrupt]\nnotice = "mail.x"\n', "[interrupt]: signal is missing; add signal = "),
    ('[interrupt]\nsignal = "Red Flag"\n', "signal = 'Red Flag' must be lower-case"),
    ('[interrupt]\nsignal = "approval"\n', "signal 'approval' is also awaited by a wait"),
    ('[interrupt]\nsignal = "red_flag"\nnotice = "mail"\n',
     "notice 'mail' must read SYSTEM.OPERATION"),
    ('[interrupt]\nsignal = "red_flag"\nnotice = ""\n',
     "notice '' must read SYSTEM.OPERATION"),
    ('[interrupt]\nsignal = "red_flag"\nnotice = "fax.send"\n',
     "goes to system 'fax', which is not declared"),
    ('[interrupt]\nsignal = "red_flag"\nat = "any"\n', "unknown key(s) ['at']"),
    ('interrupt = "red_flag"\n', "interrupt = 'red_flag' must be a table"),
])
def test_a_bad_interrupt_is_refused_saying_what_to_fix(
        write_flow: Callable[..., Path], table: str, message: str) -> None:
    # A bare key must come before the first table to belong to the top level.
    path = write_flow(text=table + variant()) if table.startswith(
        "interrupt =") else write_flow(append="\n" + table)
    with pytest.raises(FlowError) as error:
        load_flow(path)
    assert message in str(error.value)


# ---------------------------------------------------------------------------- the checker


def record() -> InstanceRecord:
    return instance_row("temporal", STARTED)

def call(step: str, at: float, *, kind: EffectKind = "effect",
         outcome: Outcome = Outcome.APPLIED, attempt: int = 1) -> EffectRecord:
    return effect_row(step, STARTED + at, effect=f"x.{step}", engine="temporal", key="k",
                      kind=kind, outcome=outcome, attempt=attempt, took=0.5)

def ended(reason: str = REASON,
          state: InstanceState = InstanceState.COMPENSATED) -> InstanceStatus:
    return InstanceStatus(state, ("create", "approval", "update"),
                          finished_at=STARTED + 100, detail=reason)


# create and update applied; update was in flight when the interrupt came (at 5).
APPLIED = [call("create", 1), call("update", 4.8)]
UNDONE = [call("update", 10, kind="compensation"), call("create", 11, kind="compensation")]
NOTICED = [call(INTERRUPT_NOTICE, 12)]


def judged(flow: Flow, effects: list[EffectRecord], status: InstanceStatus,
           interrupted_at: float | None = STARTED + 5) -> tuple[str, str, list[str]]:
    verdict = judge_instance(flow, record(), effects, status, engine_holds=False,
                             interrupted_at=interrupted_at)
    run = judge_run([verdict], fault=FaultFacts(planned=False, fired=False,
                                                expects_resume=False))
    return verdict.verdict.value, verdict.reason, list(run.failures)


def test_an_interrupt_that_compensated_everything_applied_passes(flow: Flow) -> None:
    verdict = judge_instance(flow, record(), [*APPLIED, *UNDONE, *NOTICED], ended(),
                             engine_holds=False, interrupted_at=STARTED + 5)

    assert (verdict.verdict.value, verdict.reason) == ("compensated", REASON)
    assert verdict.interrupt is not None
    assert verdict.interrupt.passed
    assert verdict.interrupt.applied == ("create", "update")
    assert verdict.interrupt.compensated == ("update", "create")
    assert [(n.step, n.expected, n.applied) for n in verdict.notices] == [
        (INTERRUPT_NOTICE, True, 1)]


def test_the_step_in_flight_may_retry_after_the_interrupt(flow: Flow) -> None:
    retried = [call("create", 1), call("update", 4.8, outcome=Outcome.TRANSIENT_ERROR),
               call("update", 6, attempt=2)]

    assert judged(flow, [*retried, *UNDONE, *NOTICED], ended())[2] == []


def test_a_step_started_after_the_interrupt_fails_saying_which(flow: Flow) -> None:
    late = [*APPLIED, call("notify", 7), *UNDONE, *NOTICED]

    verdict, reason, failures = judged(flow, late, ended())

    assert verdict == "failed"
    assert reason == ("interrupted by red_flag, but notify started 2.00s after the "
                      "interrupt was recorded, once update had landed after it: no step "
                      "may start once the interrupt is recorded")
    assert failures == [f"i1 failed: {reason} (corr)"]


def test_a_step_the_engine_sent_before_the_interrupt_may_begin_after_it(flow: Flow) -> None:
    """update's call began after the interrupt, but create had landed before it: the
    engine may have sent update first (the worker took it up a moment later)."""
    sent_before = [call("create", 1), call("update", 5.1)]

    assert judged(flow, [*sent_before, *UNDONE, *NOTICED], ended())[:2] == (
        "compensated", REASON)


def test_a_step_left_uncompensated_fails_saying_which(flow: Flow) -> None:
    only_update = [*APPLIED, call("update", 10, kind="compensation"), *NOTICED]

    verdict, reason, _ = judged(flow, only_update, ended())

    assert verdict == "failed"
    assert "create" in reason
    assert "no compensation is in the ledger for create" in reason


def test_an_interrupt_the_engine_ignored_fails(flow: Flow) -> None:
    completed = [*APPLIED, call("notify", 30)]
    status = ended("", InstanceState.COMPLETED)

    verdict, reason, _ = judged(flow, completed, status)

    assert verdict == "failed"
    assert "notify started 25.00s after the interrupt was recorded" in reason


def test_an_interrupted_instance_the_engine_reports_failed_says_so(flow: Flow) -> None:
    status = ended("boom", InstanceState.FAILED)

    verdict = judge_interrupt(flow, [*APPLIED, *UNDONE, *NOTICED], status, STARTED + 5)

    assert verdict.problems == ("the engine reports failed after the interrupt (boom), not "
                                "compensated",)


def test_an_interrupt_after_the_instance_finished_changes_nothing(flow: Flow) -> None:
    completed = [call("create", 1), call("update", 2), call("notify", 3)]

    verdict, reason, failures = judged(flow, completed, ended("", InstanceState.COMPLETED))

    assert (verdict, failures) == ("completed", [])
    assert reason == "every step's effect is in the ledger"


@pytest.mark.parametrize("after", [UNDONE, NOTICED, [*UNDONE, *NOTICED]],
                         ids=["compensated", "noticed", "both"])
def test_an_instance_reported_completed_that_also_acted_on_the_interrupt_fails(
        flow: Flow, after: list[EffectRecord]) -> None:
    """An interrupt that came once the last step had landed may lose to completion
    (nothing started after it), but not half-way: compensations or the notice sent for
    an instance the engine reports completed leave the world inconsistent."""
    completed = [call("create", 1), call("update", 2), call("notify", 3)]

    verdict, reason, failures = judged(flow, [*completed, *after],
                                       ended("", InstanceState.COMPLETED))

    assert verdict == "failed"
    assert "the instance completed, yet the interrupt was acted on" in reason
    assert failures


def test_the_engines_reason_alone_has_the_instance_judged_as_interrupted(flow: Flow) -> None:
    """`graduate signal` sent it: the checker knows no time, only the engine's reason."""
    missing_notice = [*APPLIED, *UNDONE]

    verdict = judge_instance(flow, record(), missing_notice, ended(), engine_holds=False)
    run = judge_run([verdict], fault=FaultFacts(planned=False, fired=False,
                                                expects_resume=False))

    assert verdict.interrupt is not None
    assert verdict.interrupt.interrupted_at is None
    assert run.failures == ("i1: notice of the interrupt red_flag missing: the instance was "
                            "interrupted and it was never sent (corr)",)


# ---------------------------------------------------------------------------- run options


def run_options(decisions: dict[str, Decision], at: str | None = None) -> RunOptions:
    return RunOptions(flow="mini", engine="temporal", decisions=decisions, interrupt_at=at)


@pytest.mark.parametrize("at", [None, "update", "approval"])
def test_a_run_sends_the_interrupt_where_its_options_place_it(flow: Flow,
                                                              at: str | None) -> None:
    validate_options(flow, run_options({"red_flag": "interrupt", "approval": "approve"}, at))


@pytest.mark.parametrize(("decisions", "at", "message"), [
    ({"red_flag": "approve"}, None,
     "red_flag is the flow's interrupt: its decision is red_flag=interrupt, not 'approve'"),
    ({"approval": "interrupt"}, None, "decision 'interrupt' for approval must be approve or "
                                      "reject; the flow's interrupt is sent with --signal "
                                      "red_flag=interrupt"),
    ({}, "update", "--interrupt-at update places the flow's interrupt, but the run does not "
                   "send it: add --signal red_flag=interrupt"),
    ({"red_flag": "interrupt"}, "cool_off", "--interrupt-at names 'cool_off', which is no "
                                            "step or wait of flow 'mini'; give one of: "
                                            "create, update, notify, approval"),
    ({"red_flag2": "interrupt"}, None, "waits for no signal 'red_flag2'; its waits take: "
                                       "approval, and its interrupt red_flag"),
])
def test_run_options_that_misplace_the_interrupt_are_refused(
        flow: Flow, decisions: dict[str, Decision], at: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_options(flow, run_options(decisions, at))
    assert message in str(error.value)


def test_a_flow_without_an_interrupt_cannot_place_one(mini_flow: Flow) -> None:
    with pytest.raises(ConfigError, match="declares none: add an \\[interrupt\\] table"):
        validate_options(mini_flow, run_options({}, "create"))


def test_a_flow_without_an_interrupt_cannot_send_one_to_a_wait(mini_flow: Flow) -> None:
    signal = mini_flow.waits[0].signal
    with pytest.raises(ConfigError, match="declares no interrupt to send"):
        validate_options(mini_flow, run_options({signal: "interrupt"}, None))
