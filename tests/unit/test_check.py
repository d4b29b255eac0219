"""The checker on hand-written ledger rows: each verdict here is written out by hand from
what the rows say, never computed by the checker itself."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters.base import HistoryEvent, InstanceState, InstanceStatus
from graduate.check import (
    FaultFacts,
    InstanceVerdict,
    Verdict,
    judge_instance,
    judge_run,
)
from graduate.flow import Flow, load_flow
from graduate.ledger import EffectRecord, InstanceRecord, Outcome, PointReached

FLOW = Path(__file__).resolve().parents[1] / "flows" / "chaos.toml"
FAULT_AT = 1000.0
KILLED, REPLACEMENT = 101, 202  # worker pids: the one the fault killed, the one after it
EARLY = ("create_record", "reserve")  # the steps before the wait, done before the fault
# A worker kill that fired: it is planned, and a step is in flight when it fires.
KILL_FIRED = FaultFacts(planned=True, fired=True, expects_resume=True)
DONE = InstanceStatus(InstanceState.COMPLETED, ("create_record", "reserve", "approval",
                                                "cool_off", "activate", "notify"),
                      finished_at=FAULT_AT + 20)


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(FLOW)


def record(instance: str = "i1") -> InstanceRecord:
    return InstanceRecord(instance_id=instance, run_id="r", flow="approval", flow_source="",
                          engine="temporal", tenant_id="t", entity_id="e", date="20250101",
                          correlation_id=f"corr-{instance}", trace_id=f"trace-{instance}",
                          started_at=FAULT_AT - 10)


def call(step: str, at: float, *, attempt: int = 1, pid: int = KILLED,
         outcome: Outcome = Outcome.APPLIED, instance: str = "i1") -> EffectRecord:
    return EffectRecord(id=0, run_id="r", flow="approval", instance_id=instance, step=step,
                        effect=f"crm.{step}", kind="effect", attempt=attempt,
                        idempotency_key=f"{instance}:{step}", correlation_id=f"corr-{instance}",
                        trace_id=f"trace-{instance}", engine="temporal", worker_pid=pid,
                        started_at=at, finished_at=at + 0.01, outcome=outcome)


def before_fault() -> list[EffectRecord]:
    return [call(step, FAULT_AT - 5 + n) for n, step in enumerate(EARLY)]


def judge(flow: Flow, effects: list[EffectRecord], *, reached: PointReached | None = None,
          status: InstanceStatus = DONE, holds: bool | None = None,
          cannot_tell: str = "") -> InstanceVerdict:
    return judge_instance(flow, record(), effects, status, engine_holds=holds,
                          reached=reached, fault_at=FAULT_AT, cannot_tell=cannot_tell)


def at_point(step: str, point: str, pid: int = KILLED) -> PointReached:
    return PointReached("i1", step, point, pid, FAULT_AT - 0.5)  # type: ignore[arg-type]


def test_a_new_attempt_elsewhere_is_a_resume_timed_from_the_fault(flow: Flow) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT + 3.5, attempt=2, pid=REPLACEMENT),
               call("notify", FAULT_AT + 4, pid=REPLACEMENT)]

    resume = judge(flow, effects, reached=at_point("activate", "before-effect")).resume

    assert resume is not None
    assert (resume.resumed_at, resume.exact, resume.reran) == ("activate", True, ())
    assert not resume.continued
    assert resume.time_to_resume == 3.5
    assert resume.resumed_exactly


def test_the_paused_call_carrying_on_in_its_process_is_continued_not_resumed(
        flow: Flow) -> None:
    """A warm stop lets the task in hand finish: the same pid and attempt make the
    first call after the fault. Nothing resumed, so there is no time to resume."""
    effects = [*before_fault(), call("activate", FAULT_AT + 0.2, pid=KILLED),
               call("notify", FAULT_AT + 2, pid=REPLACEMENT)]

    resume = judge(flow, effects, reached=at_point("activate", "before-effect")).resume

    assert resume is not None
    assert resume.continued
    assert resume.time_to_resume is None
    assert resume.exact


def test_a_retry_in_the_paused_process_is_not_a_continuation(flow: Flow) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT + 0.2, attempt=2, pid=KILLED),
               call("activate", FAULT_AT + 0.3, attempt=1, pid=KILLED)]

    resume = judge(flow, effects, reached=at_point("activate", "before-effect")).resume

    assert resume is not None
    assert not resume.continued


def test_at_an_after_effect_point_the_step_in_flight_running_again_is_a_rerun(
        flow: Flow) -> None:
    """The effect had landed before the fault; its repeat is listed as a re-run and is
    not "resumed exactly", even when the key absorbs it."""
    effects = [*before_fault(), call("activate", FAULT_AT - 1),
               call("activate", FAULT_AT + 10, attempt=2, pid=REPLACEMENT,
                    outcome=Outcome.ABSORBED),
               call("notify", FAULT_AT + 11, pid=REPLACEMENT)]

    verdict = judge(flow, effects, reached=at_point("activate", "after-effect"))

    assert verdict.resume is not None
    assert verdict.resume.reran == ("activate",)
    assert verdict.resume.exact  # it went on at the step in flight
    assert not verdict.resume.resumed_exactly
    run = judge_run([verdict], fault=KILL_FIRED)
    assert run.passed  # absorbed: the world changed once
    assert run.resumed_exactly == 0


def test_a_duplicate_at_an_after_effect_point_fails_and_is_no_exact_resume(
        flow: Flow) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT - 1),
               call("activate", FAULT_AT + 10, attempt=2, pid=REPLACEMENT),
               call("notify", FAULT_AT + 11, pid=REPLACEMENT)]

    verdict = judge(flow, effects, reached=at_point("activate", "after-effect"))
    run = judge_run([verdict], fault=KILL_FIRED)

    assert run.resumed_exactly == 0
    assert run.failures == (
        "i1: activate (effect) applied 2 times, an unabsorbed duplicate (corr-i1)",)


def test_an_after_effect_point_that_simply_went_on_is_continued(flow: Flow) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT - 1),
               call("notify", FAULT_AT + 2, pid=REPLACEMENT)]

    resume = judge(flow, effects, reached=at_point("activate", "after-effect")).resume

    assert resume is not None
    assert (resume.resumed_at, resume.reran, resume.continued) == ("notify", (), True)
    assert resume.resumed_exactly


def test_an_attempt_cut_short_away_from_the_armed_point_counts_as_hit(flow: Flow) -> None:
    """Another instance's reserve died with the worker: attempt 2 after the fault, and no
    failed attempt 1 to explain it."""
    effects = [call("create_record", FAULT_AT - 2),
               call("reserve", FAULT_AT + 3, attempt=2, pid=REPLACEMENT)]
    status = InstanceStatus(InstanceState.WAITING, ("create_record", "reserve"))

    verdict = judge(flow, effects, status=status, holds=True)

    assert verdict.resume is not None
    assert verdict.resume.interrupted
    assert (verdict.resume.in_flight, verdict.resume.point) == ("reserve", "before-effect")
    assert verdict.resume.time_to_resume == 3.0
    assert judge_run([verdict]).hit_by_fault == 1


@pytest.mark.parametrize(("timed_out_at", "hit"), [(FAULT_AT + 2, True),
                                                   (FAULT_AT - 2, False)])
def test_a_task_the_engine_records_as_cut_short_after_the_fault_counts_as_hit(
        flow: Flow, timed_out_at: float, hit: bool) -> None:
    """No effect call of it died, but the engine's own record shows a task of it that
    timed out on the dead worker: it was held up until its next step ran."""
    effects = [*before_fault(), call("activate", FAULT_AT + 12, pid=REPLACEMENT),
               call("notify", FAULT_AT + 13, pid=REPLACEMENT)]
    history = [HistoryEvent(timed_out_at, "workflow_task_timed_out", cut_short=True)]

    verdict = judge_instance(flow, record(), effects, DONE, engine_holds=None,
                             fault_at=FAULT_AT, history=history)

    if not hit:
        assert verdict.resume is None
        return
    assert verdict.resume is not None
    assert verdict.resume.interrupted
    assert (verdict.resume.in_flight, verdict.resume.time_to_resume) == ("activate", 12.0)


def test_a_retry_after_a_visible_failure_is_not_an_attempt_cut_short(flow: Flow) -> None:
    effects = [call("create_record", FAULT_AT - 2),
               call("reserve", FAULT_AT + 1, outcome=Outcome.TRANSIENT_ERROR),
               call("reserve", FAULT_AT + 2, attempt=2)]

    assert judge(flow, effects).resume is None


def test_attempts_before_the_fault_are_not_its_doing(flow: Flow) -> None:
    effects = [call("create_record", FAULT_AT - 3), call("reserve", FAULT_AT - 2, attempt=2)]

    assert judge(flow, effects).resume is None


@pytest.mark.parametrize(("facts", "hit", "failure"), [
    (FaultFacts(planned=True, fired=False, expects_resume=True,
                reason="every instance finished before "
                "reaching the fault point"), False,
     "the fault never fired (every instance finished before reaching the fault point)"),
    (KILL_FIRED, False, "no instance was caught in flight"),
    (KILL_FIRED, True, None),
    # A wait nobody answers: no step is in flight, so no resume is to be seen.
    (FaultFacts(planned=True, fired=True, expects_resume=False), False, None),
    # The baseline: no fault planned.
    (FaultFacts(planned=False, fired=False, expects_resume=False,
                reason="no fault planned"), False, None),
])
def test_a_run_that_shows_nothing_about_its_fault_is_no_pass(
        flow: Flow, facts: FaultFacts, hit: bool, failure: str | None) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT + 1), call("notify", FAULT_AT + 2)]
    verdict = judge(flow, effects,
                    reached=at_point("activate", "before-effect") if hit else None)

    run = judge_run([verdict], fault=facts)

    assert run.passed is (failure is None)
    if failure is not None:
        assert any(failure in f for f in run.failures)


def test_an_unfinished_instance_nobody_can_see_is_stuck_with_the_reason(flow: Flow) -> None:
    status = InstanceStatus(InstanceState.RUNNING, EARLY, detail="at activate: STARTED")

    verdict = judge(flow, before_fault(), status=status, holds=None,
                    cannot_tell="the broker's queue q holds 2 ready message(s)")

    assert verdict.verdict is Verdict.STUCK
    assert verdict.reason == (
        "unfinished (running) at the run's deadline; cannot tell whether it is lost or "
        "still held: the broker's queue q holds 2 ready message(s)")


def test_an_unfinished_instance_nothing_holds_is_lost(flow: Flow) -> None:
    status = InstanceStatus(InstanceState.RUNNING, EARLY, detail="at activate: STARTED")

    verdict = judge(flow, before_fault(), status=status, holds=False)

    assert verdict.verdict is Verdict.LOST


RECOVERED_AT = FAULT_AT + 4  # the replacement worker was ready


def test_an_instance_whose_work_waited_for_the_recovery_is_held_up_with_its_delay(
        flow: Flow) -> None:
    """In flight when the fault fired, no attempt of its own cut short, and no call until
    the replacement was ready: held up (not interrupted), with the delay the fault cost."""
    effects = [*before_fault(), call("activate", FAULT_AT + 5, pid=REPLACEMENT),
               call("notify", FAULT_AT + 6, pid=REPLACEMENT)]

    verdict = judge_instance(flow, record(), effects, DONE, engine_holds=None,
                             fault_at=FAULT_AT, recovered_at=RECOVERED_AT,
                             ran_before_fault={KILLED, SURVIVOR})

    assert verdict.resume is not None
    assert verdict.resume.held_up
    assert not verdict.resume.interrupted
    assert verdict.resume.affected_as == "held up"
    assert (verdict.resume.in_flight, verdict.resume.time_to_resume) == ("activate", 5.0)
    assert verdict.resume.measured_from == "ledger: the first effect call after the fault"
    run = judge_run([verdict])
    assert (run.hit_by_fault, run.held_up, run.interrupted) == (1, 1, 0)
    assert run.passed
    # Held up alone, it shows no resume of an attempt in flight: the fault proved nothing.
    assert not judge_run([verdict], fault=KILL_FIRED).passed


SURVIVOR = 5150  # a worker the fault left alone


@pytest.mark.parametrize("case", ["moved during the outage", "finished before the fault",
                                  "started after the fault", "no recovery recorded",
                                  "a worker that outlived the fault took it up"])
def test_an_instance_the_outage_did_not_delay_is_not_held_up(flow: Flow, case: str) -> None:
    effects = [*before_fault(), call("activate", FAULT_AT + 5, pid=REPLACEMENT)]
    status, entry = DONE, record()
    recovered: float | None = RECOVERED_AT
    if case == "moved during the outage":  # another worker ran it meanwhile
        effects.insert(2, call("activate", FAULT_AT + 1, pid=REPLACEMENT))
    elif case == "a worker that outlived the fault took it up":
        # Busy with other instances until after the replacement began, not waiting for it.
        effects[-1] = call("activate", FAULT_AT + 5, pid=SURVIVOR)
    elif case == "finished before the fault":
        status = InstanceStatus(InstanceState.COMPLETED, finished_at=FAULT_AT - 1)
    elif case == "started after the fault":
        entry = replace(record(), started_at=FAULT_AT + 1)
    else:
        recovered = None

    verdict = judge_instance(flow, entry, effects, status, engine_holds=None,
                             fault_at=FAULT_AT, recovered_at=recovered,
                             ran_before_fault={KILLED, SURVIVOR})

    assert verdict.resume is None


def test_a_task_the_engine_records_as_held_up_makes_the_instance_held_up(flow: Flow) -> None:
    """A message the lost worker had only prefetched comes back unstarted: the engine's
    record says so, whatever the timing."""
    effects = [*before_fault(), call("activate", FAULT_AT + 1, pid=REPLACEMENT)]
    history = [HistoryEvent(FAULT_AT + 0.9, "task redelivered", "activate: attempt 1 began "
                            "on a redelivered message", held_up=True, taken_up=True)]

    verdict = judge_instance(flow, record(), effects, DONE, engine_holds=None,
                             fault_at=FAULT_AT, history=history)

    assert verdict.resume is not None
    assert verdict.resume.held_up
    assert not verdict.resume.interrupted


def test_the_time_to_resume_is_read_from_the_engines_record_where_it_has_one(
        flow: Flow) -> None:
    """The engine's started event of the retried attempt, not the effect call it made
    later; an engine event after that call, or before the fault, is something else."""
    effects = [*before_fault(), call("activate", FAULT_AT + 3.5, attempt=2, pid=REPLACEMENT)]
    history = [HistoryEvent(FAULT_AT - 1, "activity_task_started", "attempt 1",
                            taken_up=True),
               HistoryEvent(FAULT_AT + 3.2, "activity_task_started", "attempt 2",
                            taken_up=True),
               HistoryEvent(FAULT_AT + 3.7, "workflow_task_started", taken_up=True)]

    resume = judge_instance(flow, record(), effects, DONE, engine_holds=None,
                            reached=at_point("activate", "before-effect"),
                            fault_at=FAULT_AT, history=history).resume

    assert resume is not None
    assert resume.time_to_resume == pytest.approx(3.2)
    assert resume.measured_from == "engine: activity_task_started (attempt 2)"
