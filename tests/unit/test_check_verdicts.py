"""One verdict function: `graduate run`, `graduate chaos`, the gates and the reports all
count with `graduate.check`, so they cannot disagree on what a ledger shows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.adr.gates import failures
from graduate.check import (
    EffectVerdict,
    InstanceVerdict,
    Resume,
    Verdict,
    judge_instance,
    judge_run,
)
from graduate.evidence import EvidenceStore
from graduate.flow import Flow, InstanceRequest, Step
from graduate.ledger import Ledger, Outcome
from graduate.runner import summarise
from graduate.runs.record import RunRecord

MakeRequest = Callable[..., InstanceRequest]
DEMO = Path(__file__).resolve().parents[2] / "reports" / "evidence"


def _step(flow: Flow, name: str) -> Step:
    node = flow.node(name)
    assert isinstance(node, Step)
    return node


def _completed(flow: Flow, ledger: Ledger, make_request: MakeRequest, *,
               repeated: str) -> tuple[InstanceRequest, InstanceStatus]:
    """An instance that ran every step once, and `repeated` a second time (as a worker
    killed after the effect, before the engine recorded the step, does on redelivery)."""
    request = make_request()
    ledger.register(flow, request, "celery-chain")
    for name in ("create", "notify"):
        ledger.call(flow, request, _step(flow, name), attempt=1, engine="celery-chain")
    ledger.call(flow, request, _step(flow, repeated), attempt=2, engine="celery-chain")
    status = InstanceStatus(InstanceState.COMPLETED, done=("create", "approval", "notify"),
                            finished_at=time.time())
    return request, status


def test_run_and_chaos_agree_that_an_absorbed_repeat_is_no_duplicate(
        ledger: Ledger, mini_flow: Flow, make_request: MakeRequest) -> None:
    # crm honours idempotency keys: the second create is absorbed by its key.
    request, status = _completed(mini_flow, ledger, make_request, repeated="create")
    rows = ledger.effects(instance_id=request.instance_id)
    assert [r.outcome for r in rows if r.step == "create"] == [Outcome.APPLIED,
                                                                Outcome.ABSORBED]

    run_view = summarise(mini_flow, ledger, request, status)  # `graduate run`'s table
    chaos_view = judge_run([judge_instance(  # `graduate chaos`, as the harness judges
        mini_flow, ledger.instance(request.instance_id), rows, status,
        engine_holds=None)])

    assert (run_view.duplicates, run_view.effects_absorbed) == (0, 1)
    assert (chaos_view.unabsorbed_duplicates, chaos_view.absorbed_duplicates) == (0, 1)
    assert chaos_view.passed


def test_run_and_chaos_agree_on_a_repeat_that_went_through(
        ledger: Ledger, mini_flow: Flow, make_request: MakeRequest) -> None:
    # mail does not honour idempotency keys: the second notify is applied again.
    request, status = _completed(mini_flow, ledger, make_request, repeated="notify")
    rows = ledger.effects(instance_id=request.instance_id)

    run_view = summarise(mini_flow, ledger, request, status)
    chaos_view = judge_run([judge_instance(
        mini_flow, ledger.instance(request.instance_id), rows, status,
        engine_holds=None)])

    assert (run_view.duplicates, run_view.effects_absorbed) == (1, 0)
    assert (chaos_view.unabsorbed_duplicates, chaos_view.absorbed_duplicates) == (1, 0)
    assert not chaos_view.passed


# ---------------------------------------------------------------------------- hand-written verdicts


def verdict(instance_id: str = "i-01", *, state: Verdict = Verdict.COMPLETED,
            applied: int = 1, absorbed: int = 0,
            resume: Resume | None = None) -> InstanceVerdict:
    return InstanceVerdict(
        instance_id=instance_id, correlation_id=f"corr-{instance_id}",
        trace_id=f"trace-{instance_id}", verdict=state, reason=f"{state} as written",
        engine_state=str(state),
        effects=(EffectVerdict("create", "effect", applied + absorbed, applied, absorbed, 0),
                 EffectVerdict("notify", "effect", 1, 1, 0, 0)),
        resume=resume, time_to_complete=1.0)


@pytest.mark.parametrize(("state", "fails"), [
    (Verdict.COMPLETED, False), (Verdict.COMPENSATED, False), (Verdict.FAILED, True),
    (Verdict.LOST, True), (Verdict.STUCK, True)])
def test_a_verdict_fails_its_run_when_the_commitment_is_neither_done_nor_undone(
        state: Verdict, fails: bool) -> None:
    judged = judge_run([verdict(state=state)])

    assert state.fails_run is fails
    assert judged.passed is not fails
    assert judged.counts == {v.value: int(v is state) for v in Verdict}
    if fails:
        assert judged.failures == (f"i-01 {state}: {state} as written (corr-i-01)",)


def test_an_absorbed_repeat_passes_and_an_applied_one_fails() -> None:
    absorbed = judge_run([verdict(absorbed=2)])
    applied = judge_run([verdict(applied=3)])

    assert (absorbed.passed, absorbed.absorbed_duplicates,
            absorbed.unabsorbed_duplicates) == (True, 2, 0)
    assert (applied.passed, applied.absorbed_duplicates,
            applied.unabsorbed_duplicates) == (False, 0, 2)
    assert applied.failures == (
        "i-01: create (effect) applied 3 times, an unabsorbed duplicate (corr-i-01)",)


def test_a_resume_at_another_step_fails_unless_exact_resumes_are_not_required() -> None:
    elsewhere = Resume(in_flight="create", point="before-effect", resumed_at="notify",
                       exact=False, time_to_resume=2.5)
    exact = Resume(in_flight="create", point="before-effect", resumed_at="create",
                   exact=True, time_to_resume=1.5)
    instances = [verdict("i-01", resume=elsewhere), verdict("i-02", resume=exact),
                 verdict("i-03")]

    strict = judge_run(instances)
    lenient = judge_run(instances, require_exact_resume=False)

    assert (strict.hit_by_fault, strict.resumed_exactly) == (2, 1)
    assert strict.failures == ("i-01: in flight at create, resumed at notify, not at the "
                               "exact step (corr-i-01)",)
    assert lenient.passed


def test_an_instance_judged_from_its_ledger_and_status(
        ledger: Ledger, mini_flow: Flow, make_request: MakeRequest) -> None:
    request = make_request()
    record = ledger.register(mini_flow, request, "temporal")
    ledger.call(mini_flow, request, _step(mini_flow, "create"), attempt=1, engine="temporal")
    rows = ledger.effects(instance_id=request.instance_id)

    gone = judge_instance(mini_flow, record, rows,
                          InstanceStatus(InstanceState.RUNNING, done=("create",)),
                          engine_holds=False)
    held = judge_instance(mini_flow, record, rows,
                          InstanceStatus(InstanceState.WAITING, done=("create",)),
                          engine_holds=True)
    claimed = judge_instance(mini_flow, record, rows,
                             InstanceStatus(InstanceState.COMPLETED, finished_at=time.time()),
                             engine_holds=None)

    assert (gone.verdict, held.verdict, claimed.verdict) == (
        Verdict.LOST, Verdict.STUCK, Verdict.LOST)
    assert "no applied effect for notify" in claimed.reason
    assert [(e.step, e.applied, e.absorbed) for e in gone.effects] == [("create", 1, 0)]


def test_the_gates_judge_a_stored_run_with_the_checker() -> None:
    """The gates ask `judge_run` about the stored instances, not the stored summary: a
    run whose summary says it passed but whose instances show a loss fails."""
    stored = EvidenceStore(DEMO).load_run("037f55")  # the demo's Temporal baseline
    raw = stored.to_dict()
    raw["instances"][0] = {**raw["instances"][0], "verdict": "lost", "reason": "gone"}
    tampered = RunRecord.from_dict(raw)

    assert stored.verdict.passed
    assert tampered.verdict.passed  # as stored, when it was judged
    assert failures(stored) == []
    assert failures(tampered) == list(judge_run(tampered.verdicts).failures)
    assert failures(tampered) == [
        f"{stored.verdicts[0].instance_id} lost: gone ({stored.verdicts[0].correlation_id})"]
