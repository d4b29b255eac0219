"""The verdicts of what a fault did to single instances: a second start of a business key
(`judge_starts`) and an operator's rollback (`judge_rollback`), from ledger rows alone."""

from __future__ import annotations

import pytest
from tests.unit.conftest import SAMPLE

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import (
    FaultActs,
    InstanceVerdict,
    SecondStart,
    Verdict,
    judge_acts,
    judge_rollback,
    judge_run,
    judge_starts,
)
from graduate.flow import Flow, load_flow
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Outcome

FIRST, SECOND = "trace-first", "trace-second"
RECORD = InstanceRecord(instance_id="partner_approval-r1-01", run_id="r1",
                        flow="partner_approval", flow_source="", engine="temporal",
                        tenant_id="acme", entity_id="r1-01", date="20261129",
                        correlation_id="corr", trace_id=FIRST, started_at=0.0)
COMPENSATED = InstanceStatus(InstanceState.COMPENSATED)


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(str(SAMPLE))


def row(step: str, at: float, *, kind: EffectKind = "effect", trace: str = FIRST,
        outcome: Outcome = Outcome.APPLIED) -> EffectRecord:
    return EffectRecord(id=int(at * 10), run_id="r1", flow="partner_approval",
                        instance_id=RECORD.instance_id, step=step, effect=f"x.{step}",
                        kind=kind, attempt=1, idempotency_key=f"k:{step}:{kind}",
                        correlation_id="corr", trace_id=trace, engine="temporal",
                        worker_pid=1, started_at=at, finished_at=at, outcome=outcome)


def undo(step: str, at: float) -> EffectRecord:
    return row(step, at, kind="compensation")


# ---------------------------------------------------------------------------- starts


def test_a_refused_second_start_leaves_one_set_of_effects() -> None:
    verdict = judge_starts(RECORD, [row("create_record", 1), row("request_approval", 2)],
                           [SecondStart(SECOND, 1.5, "already running")])

    assert verdict.passed
    assert verdict.business_key == "acme:partner_approval:r1-01:20261129"
    assert verdict.starts == 2
    assert verdict.effect_sets == (FIRST,)
    assert verdict.reason == "one set of effects; the second start was refused: already running"


def test_a_second_set_of_effects_is_a_duplicate_even_when_every_repeat_was_absorbed() -> None:
    effects = [row("create_record", 1), row("create_record", 2, trace=SECOND,
                                            outcome=Outcome.ABSORBED)]

    verdict = judge_starts(RECORD, effects, [SecondStart(SECOND, 1.5, None)])

    assert not verdict.passed
    assert verdict.effect_sets == (FIRST, SECOND)
    assert verdict.reason == ("2 sets of effects for business key acme:partner_approval:r1-01:"
                              "20261129: 1 second start(s) accepted and run, every repeated "
                              "effect absorbed by its idempotency key")


def test_an_accepted_second_start_that_ran_nothing_passes() -> None:
    verdict = judge_starts(RECORD, [row("create_record", 1)], [SecondStart(SECOND, 1.5, None)])

    assert verdict.passed
    assert verdict.reason == "one set of effects; the second start was accepted but ran nothing"


# ---------------------------------------------------------------------------- rollback


def test_a_rollback_that_undoes_what_applied_in_reverse_once_each_passes(flow: Flow) -> None:
    effects = [row("create_record", 1), row("request_approval", 2),
               undo("request_approval", 3), undo("create_record", 4)]

    verdict = judge_rollback(flow, effects, COMPENSATED, cancelled_at=2.5)

    assert verdict.passed, verdict.problems
    assert verdict.applied == ("create_record", "request_approval")
    assert verdict.compensated == ("request_approval", "create_record")


def test_a_rollback_that_leaves_a_step_applied_names_it(flow: Flow) -> None:
    effects = [row("create_record", 1), row("request_approval", 2), undo("create_record", 3)]

    verdict = judge_rollback(flow, effects, COMPENSATED, cancelled_at=2.5)

    assert verdict.problems == ("the rollback left request_approval applied and "
                                "uncompensated",)


def test_a_rollback_in_the_wrong_order_twice_or_of_what_never_applied_fails(
        flow: Flow) -> None:
    effects = [row("create_record", 1), row("request_approval", 2),
               undo("create_record", 3), undo("create_record", 3.5),
               undo("request_approval", 4)]

    verdict = judge_rollback(flow, effects, COMPENSATED, cancelled_at=2.5)

    assert verdict.problems == (
        "the compensation of create_record applied 2 times, not once",
        "compensations ran in the order create_record, request_approval; the steps applied "
        "in the order create_record, request_approval, so the reverse is request_approval, "
        "create_record",
    )
    assert judge_rollback(flow, [undo("create_record", 3)], COMPENSATED, 2.5).problems == (
        "compensated create_record, which had not applied",)


def test_a_rollback_is_inconsistent_when_a_step_lands_after_compensation_began(
        flow: Flow) -> None:
    effects = [row("create_record", 1), undo("create_record", 3), row("activate", 4)]

    verdict = judge_rollback(flow, effects, COMPENSATED, cancelled_at=2.5)

    assert verdict.problems == (
        "activate applied and has no compensation: the rollback cannot undo it",
        "activate applied 1.00s after the compensation began: it is left applied",
    )


def test_a_rollback_the_engine_did_not_honour_fails(flow: Flow) -> None:
    completed = judge_rollback(flow, [], InstanceStatus(InstanceState.COMPLETED), 1.0)
    failed = judge_rollback(flow, [], InstanceStatus(InstanceState.FAILED, detail="revoked"),
                            1.0)

    assert completed.problems == ("the instance completed: the cancellation was not "
                                  "honoured",)
    assert failed.problems == ("the engine reports failed after the cancellation (revoked), "
                               "not compensated",)


def test_the_run_fails_on_a_duplicate_commitment_or_an_incomplete_rollback(
        flow: Flow) -> None:
    base = InstanceVerdict(instance_id=RECORD.instance_id, correlation_id="corr",
                           trace_id=FIRST, verdict=Verdict.COMPENSATED, reason="",
                           engine_state="compensated", effects=(), resume=None,
                           time_to_complete=1.0)
    effects = [row("create_record", 1), row("create_record", 2, trace=SECOND)]
    acts = FaultActs(cancelled={RECORD.instance_id: 1.5})
    acts.start_again(RECORD.instance_id, SecondStart(SECOND, 1.5, None))

    judged = judge_acts(base, flow, RECORD, effects, COMPENSATED, acts)

    assert judged.starts is not None
    assert not judged.starts.passed
    assert judged.rollback is not None
    failures = judge_run([judged]).failures
    assert failures[0].startswith(f"{RECORD.instance_id}: duplicate commitment: 2 sets")
    assert failures[1] == (f"{RECORD.instance_id}: rollback: the rollback left create_record "
                           "applied and uncompensated (corr)")
    assert judge_acts(base, flow, RECORD, effects, COMPENSATED, FaultActs()) == base
