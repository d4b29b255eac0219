"""Real faults on real processes, and what the checker sees: the engines' documented behaviour.

Each scenario runs the chaos flow under one fault through the harness, then asserts on
the verdicts, which come from the ledger and the engine's own record. Every verdict
kind is produced by at least one scenario here. After each test, no process that the
harness started may remain.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters.base import HistoryEvent
from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, TimelineEvent, run_chaos
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import Failure, RunOptions, approve_all
from graduate.testing.outcome import ChaosOutcome
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]


@pytest.fixture
def own_services(settings: Settings) -> Settings:
    """No external services: the harness starts its own, so it may kill and restart them."""
    return replace(settings, temporal_address=None, broker_url=None)


@pytest.fixture
def on_rabbitmq(settings: Settings, rabbitmq_url: str) -> Settings:
    """Celery's broker on RabbitMQ (GRADUATE_TEST_RABBITMQ_URL); results stay in Redis.
    Without the URL the test is skipped, or fails where services are required."""
    return replace(settings, broker_url=rabbitmq_url, result_backend_url=settings.broker_url)


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def celery_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Each Celery fault scenario runs on both brokers: Redis, then RabbitMQ."""
    if request.param == "redis":
        return settings
    on: Settings = request.getfixturevalue("on_rabbitmq")
    return on


def chaos(settings: Settings, path: Path, engine: str, fault: str, at: str | None, *,
          profile: str = "defaults", timeout: float = 60, instances: int = 1,
          wait_deadline: float | None = None, hit: str = "one") -> ChaosResult:
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, instances=instances, timeout=timeout,
                       decisions=approve_all(flow)),
        plan=parse_plan(fault, at, flow, restart_delay=0.5, hit=hit), profile=profile,
        wait_deadline=wait_deadline)
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))


def only(result: ChaosResult) -> InstanceVerdict:
    assert result.applicable, result.reason
    assert result.fired, result.reason
    [instance] = result.instances
    return instance


def applied(settings: Settings, instance: InstanceVerdict, step: str) -> list[Outcome]:
    return [e.outcome for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
            if e.step == step and e.kind == "effect"]


def test_celery_chain_with_defaults_loses_the_rest_of_the_chain(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """Celery acknowledges before running: a killed worker takes the task, and every
    later step of the chain, with it."""
    result = chaos(celery_settings, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:before-effect", timeout=90)
    instance = only(result)

    assert instance.verdict is Verdict.LOST
    # Nothing holds it, and the worker that had its task is dead: the run ends there,
    # not at its deadline, and says how it knew.
    ended = _timeline(result)[-1]
    assert ended.detail.startswith(f"ended early: nothing holds {instance.instance_id}")
    assert ended.at < 60
    assert applied(celery_settings, instance, "activate") == []
    assert applied(celery_settings, instance, "notify") == []
    assert instance.resume is not None
    assert instance.resume.resumed_at is None


def test_celery_chain_with_defaults_ends_once_only_a_dead_workers_unacked_messages_hold_it(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The killed worker had prefetched other instances' tasks: Redis keeps them in its
    unacked hash and gives them back only after the visibility timeout (an hour by
    default). Nothing can move those instances before the run's deadline, so the run
    ends without waiting for it, judges them stuck, as the deadline would, and its
    timeline says until when each is held up."""
    result = chaos(settings, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:before-effect", timeout=150, instances=4)
    assert result.fired, result.reason

    timeline = _timeline(result)
    ended = timeline[-1]
    stuck = {i.instance_id for i in result.instances if i.verdict is Verdict.STUCK}
    held_up = {e.instance: e.detail for e in timeline if e.kind == "held-up"}
    assert stuck, "no instance was held by the killed worker's prefetched messages"
    assert set(held_up) == stuck
    for detail in held_up.values():
        assert "never acknowledged" in detail
        assert "visibility timeout (3600 s)" in detail
    assert ended.detail.startswith("ended early: ")
    assert "before the run's deadline (see their held-up events)" in ended.detail
    assert ended.at < 120
    # Held, so never judged lost: the message comes back after the visibility timeout.
    for instance in result.instances:
        if instance.instance_id in stuck:
            assert "the engine still holds it" in instance.reason


def test_celery_chain_with_late_ack_runs_the_step_again_after_the_visibility_timeout(
        settings: Settings, flow_file: FlowFactory) -> None:
    """With acks_late the task comes back, after the Redis visibility timeout (10 s in
    the tuned profile), and its effect runs twice: the idempotency key absorbs it."""
    result = chaos(settings, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:after-effect", profile="tuned", timeout=40)
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED
    assert applied(settings, instance, "activate") == [Outcome.APPLIED, Outcome.ABSORBED]
    assert instance.resume is not None
    assert instance.resume.exact
    # The effect had landed: its repeat is a re-run, shown as one, not "resumed exactly".
    assert instance.resume.reran == ("activate",)
    assert not instance.resume.resumed_exactly
    assert result.verdict.resumed_exactly == 0
    first, again = [e for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
                    if e.step == "activate"]
    # The message was delivered before its first call started: the visibility timeout
    # counts from there.
    assert again.started_at - first.started_at >= 10.0
    assert result.verdict.passed


def test_celery_redelivery_is_recorded_as_the_next_attempt_and_in_the_engines_record(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """A task redelivered after its worker died carries the same retry count as the
    delivery that died (Celery counts only the retries it sent): the ledger still tells
    the two deliveries apart, even when the first died before its effect left a row."""
    result = chaos(celery_settings, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:before-effect", profile="tuned", timeout=40)
    instance = only(result)

    calls = [e for e in Ledger(celery_settings.ledger).effects(instance_id=instance.instance_id)
             if e.step == "activate"]
    assert [(e.attempt, e.outcome) for e in calls] == [(2, Outcome.APPLIED)]
    assert [e.attempt for e in Ledger(celery_settings.ledger).effects(
        instance_id=instance.instance_id) if e.step == "notify"] == [1]
    redelivered = [e.detail for e in _history(result, instance)
                   if e.kind == "task redelivered"]
    assert redelivered == ["activate: delivery 2 of attempt 1"]
    # The time to resume is read from that record: when the redelivered task began.
    assert instance.resume is not None
    assert instance.resume.measured_from == (
        "engine: task redelivered (activate: delivery 2 of attempt 1)")
    assert instance.resume.time_to_resume is not None
    assert instance.resume.time_to_resume <= calls[0].started_at - _fired_at(result)


def test_celery_chain_with_late_ack_duplicates_an_effect_nobody_absorbs(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """The same redelivery on a system that ignores idempotency keys changes the world
    twice: an unabsorbed duplicate that fails the run."""
    result = chaos(celery_settings, flow_file("chaos"), "celery-chain", "kill-worker",
                   "notify:after-effect", profile="tuned", timeout=40)
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED
    assert applied(celery_settings, instance, "notify") == [Outcome.APPLIED, Outcome.APPLIED]
    assert instance.unabsorbed_duplicates == 1
    assert instance.resume is not None
    assert instance.resume.reran == ("notify",)
    assert result.verdict.resumed_exactly == 0
    assert not result.verdict.passed
    assert any("notify (effect) applied 2 times" in f for f in result.verdict.failures)


def test_celery_pool_child_killed_fails_the_chain_visibly(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """Killing only the prefork child: the main process reports WorkerLostError, the
    chain stops there, and nothing compensates."""
    instance = only(chaos(celery_settings, flow_file("chaos"), "celery-chain", "kill-pool-child",
                          "activate:before-effect", timeout=15))

    assert instance.verdict is Verdict.FAILED
    assert "SIGKILL" in instance.reason or "exited" in instance.reason
    assert applied(celery_settings, instance, "activate") == []


def test_state_machine_still_holds_an_instance_its_lease_has_not_freed(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """The state machine's row survives the kill, but its lease (step timeout + 15 s
    by default, so 18 s from the step's start) outlasts a short run: the instance is
    stuck, not lost. The run's 12 s also cover starting the workers and beat, which on a
    loaded CI machine took longer than the 6 s this test once had."""
    instance = only(chaos(celery_settings, flow_file("chaos"), "celery-state-machine",
                          "kill-worker", "activate:before-effect", timeout=12))

    assert instance.verdict is Verdict.STUCK


def test_state_machine_recovers_at_the_step_in_flight(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    instance = only(chaos(celery_settings, flow_file("chaos"), "celery-state-machine",
                          "kill-worker", "activate:before-effect", profile="tuned",
                          timeout=40))

    assert instance.verdict is Verdict.COMPLETED
    assert instance.resume is not None
    assert instance.resume.exact
    assert applied(celery_settings, instance, "activate") == [Outcome.APPLIED]


def resumed_at_the_step_in_flight(settings: Settings, result: ChaosResult,
                                  instance: InstanceVerdict) -> None:
    """Temporal retried the activity that the worker kill cut short (paused before its
    effect at activate) on the replacement worker, after its start-to-close timeout;
    every step applied once."""
    assert instance.verdict is Verdict.COMPLETED
    assert instance.resume is not None
    assert instance.resume.exact
    assert instance.resume.reran == ()
    assert instance.resume.time_to_resume is not None
    assert instance.resume.time_to_resume >= 3.0
    assert not instance.resume.continued  # a new attempt, on the replacement worker
    # Measured from the server's record of the retried attempt, which started before its
    # effect call was written to the ledger.
    assert instance.resume.measured_from == (
        "engine: activity_task_started (attempt 2 after start-to-close timeout)")
    [again] = [e for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
               if e.step == "activate"]
    assert instance.resume.time_to_resume <= again.started_at - _fired_at(result)
    for step in ("create_record", "reserve", "activate", "notify"):
        assert applied(settings, instance, step) == [Outcome.APPLIED]


def test_temporal_heartbeat_timeout_retries_a_dead_workers_step_long_before_start_to_close(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The tuned profile sets a heartbeat timeout (2 s), and a step heartbeats as it
    starts and while paused. With a start-to-close of ten minutes, only the missed
    heartbeats can tell the server that the killed worker's activity is dead, inside
    this run's deadline."""
    path = flow_file("chaos", **{'timeout = "3s"': 'timeout = "10m"'})
    result = chaos(settings, path, "temporal", "kill-worker", "activate:before-effect",
                   profile="tuned", timeout=40)
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED
    assert instance.resume is not None
    assert instance.resume.exact
    assert applied(settings, instance, "activate") == [Outcome.APPLIED]
    started = [e.detail for e in _history(result, instance) if e.kind ==
               "activity_task_started"]
    assert "attempt 2 after heartbeat timeout" in started


def test_temporal_resumes_after_a_server_restart(own_services: Settings,
                                                  flow_file: FlowFactory) -> None:
    """The dev server keeps its database: the workflow resumes where it was."""
    result = chaos(own_services, flow_file("chaos"), "temporal", "restart-server",
                   "activate:before-effect")
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED
    assert instance.resume is not None
    assert instance.resume.exact
    # The worker lived on: the paused activity went on in it once the server was back.
    assert instance.resume.continued
    assert instance.resume.time_to_resume is None
    assert [e.kind for e in _timeline(result)] == [
        "instances-started", "signal-sent", "fault-point-reached", "fault-fired",
        "service-restarted", "run-ended"]
    [signal] = [e for e in _timeline(result) if e.kind == "signal-sent"]
    assert signal.detail == f"approval=approve to {instance.instance_id}"
    assert signal.instance == instance.instance_id


def test_a_wait_past_its_deadline_is_compensated(settings: Settings,
                                                 flow_file: FlowFactory) -> None:
    instance = only(chaos(settings, flow_file("chaos"), "temporal", "wait-timeout", None,
                          wait_deadline=2.0))

    assert instance.verdict is Verdict.COMPENSATED
    assert "deadline" in instance.reason
    undo = [e.step for e in instance.effects if e.kind == "compensation" and e.applied]
    assert undo == ["reserve", "create_record"]


def test_a_fault_that_cannot_apply_is_reported_not_run(settings: Settings,
                                                       flow_file: FlowFactory) -> None:
    result = chaos(settings, flow_file("chaos"), "temporal", "restart-broker",
                   "activate:before-effect")

    assert not result.applicable
    assert "no broker" in result.reason
    assert result.instances == ()


def _timeline(result: ChaosResult) -> list[TimelineEvent]:
    assert result.evidence is not None
    record = EvidenceStore(result.evidence.parents[1]).load_run(result.run_id)
    return list(record.timeline)


def _fired_at(result: ChaosResult) -> float:
    """When the fault fired, on the ledger's (epoch) clock."""
    assert result.evidence is not None
    record = EvidenceStore(result.evidence.parents[1]).load_run(result.run_id)
    assert record.started_at is not None
    assert record.fault_fired_at is not None
    return record.started_at + record.fault_fired_at


def _history(result: ChaosResult, instance: InstanceVerdict) -> list[HistoryEvent]:
    assert result.evidence is not None
    record = EvidenceStore(result.evidence.parents[1]).load_run(result.run_id)
    [found] = [i for i in record.instances if i.verdict.instance_id == instance.instance_id]
    return list(found.history)


def deploy(settings: Settings, path: Path, engine: str, *, change: str,
           versioned: bool) -> ChaosResult:
    flow = load_flow(path)
    plan = parse_plan("deploy-change", "approval:during-wait", flow, restart_delay=0.5,
                      versioned=versioned, change=change)
    options = ChaosOptions(run=RunOptions(flow=str(path), engine=engine, timeout=15,
                                          decisions=approve_all(flow)), plan=plan)
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))


def test_temporal_catches_a_reorder_deployed_in_flight(settings: Settings,
                                                       flow_file: FlowFactory) -> None:
    """Replay meets commands that no longer match the history: the workflow task fails
    with a non-determinism error, and the instance goes nowhere (it is not lost). Its
    workflow task fails again at every attempt on the same code, so the run ends there,
    not at its deadline, and says that only a deploy can move it."""
    result = deploy(settings, flow_file("chaos"), "temporal", change="reorder",
                    versioned=False)
    instance = only(result)

    assert instance.verdict is Verdict.STUCK
    assert "Nondeterminism" in instance.reason
    assert applied(settings, instance, "activate") == []
    timeline = _timeline(result)
    [held_up] = [e for e in timeline if e.kind == "held-up"]
    assert held_up.instance == instance.instance_id
    assert held_up.detail.startswith("nothing can move it until a deploy: ")
    assert "NON_DETERMINISTIC_ERROR" in held_up.detail
    assert timeline[-1].detail.startswith("ended early: ")


def test_temporal_versioning_guard_keeps_instances_in_flight_on_their_version(
        settings: Settings, flow_file: FlowFactory) -> None:
    instance = only(deploy(settings, flow_file("chaos"), "temporal", change="reorder",
                           versioned=True))

    assert instance.verdict is Verdict.COMPLETED
    assert instance.resume is not None
    assert instance.resume.exact
    assert instance.resume.resumed_at == "activate"


def test_state_machine_cursor_reruns_a_finished_step_after_a_step_is_added(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The row's cursor is an index: one more step in front of it points it back at a
    step the instance had finished, which runs again (absorbed here by its key)."""
    result = deploy(settings, flow_file("chaos"), "celery-state-machine", change="add-step",
                    versioned=False)
    instance = only(result)

    assert instance.resume is not None
    assert instance.resume.reran == ("reserve",)
    assert applied(settings, instance, "reserve") == [Outcome.APPLIED, Outcome.ABSORBED]
    assert not result.verdict.passed


def test_state_machine_survives_a_broker_restart(own_services: Settings,
                                                 flow_file: FlowFactory) -> None:
    """Redis keeps its queue in its append-only file, and the state machine's tick
    re-sends whatever the outage swallowed."""
    result = chaos(own_services, flow_file("chaos"), "celery-state-machine",
                   "restart-broker", "activate:before-effect")
    instance = only(result)

    assert "service-restarted" in [e.kind for e in _timeline(result)]
    assert instance.verdict is Verdict.COMPLETED
    for step in ("activate", "notify"):
        assert applied(own_services, instance, step) == [Outcome.APPLIED]


def test_celery_chain_under_a_broker_restart_is_never_silently_lost(
        own_services: Settings, flow_file: FlowFactory) -> None:
    """Whether the step in flight touches Redis during the outage is a race: it then
    fails visibly (the chain stops, nothing compensates) or goes on. The append-only
    file keeps the queue, so the commitment is never lost without a trace."""
    result = chaos(own_services, flow_file("chaos"), "celery-chain", "restart-broker",
                   "activate:before-effect")
    instance = only(result)

    assert instance.verdict in (Verdict.COMPLETED, Verdict.FAILED)
    if instance.verdict is Verdict.FAILED:
        assert "nothing compensates" in instance.reason
        assert not result.verdict.passed


def test_temporal_retries_an_activity_whose_completion_was_cut_off(
        settings: Settings, flow_file: FlowFactory) -> None:
    """A partition longer than the start-to-close timeout (3 s): the effect landed, its
    completion never reached the server, so the activity runs again: at-least-once,
    absorbed here by the idempotency key."""
    path = flow_file("chaos")
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine="temporal", timeout=40,
                       decisions=approve_all(flow)),
        plan=parse_plan("partition", "activate:before-effect", flow, partition_for=5.0))
    result = run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED
    assert applied(settings, instance, "activate") == [Outcome.APPLIED, Outcome.ABSORBED]
    kinds = [e.kind for e in _timeline(result)]
    assert kinds[kinds.index("fault-fired") + 1] == "network-healed"


def test_celery_cold_shutdown_abandons_the_task_in_hand(celery_settings: Settings,
                                                        flow_file: FlowFactory) -> None:
    """SIGQUIT: Celery's cold shutdown does not wait for the running task; with the
    default early acknowledgement that task, and the chain after it, are gone."""
    path = flow_file("chaos")
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine="celery-chain", timeout=10,
                       decisions=approve_all(flow)),
        plan=parse_plan("stop-worker", "activate:before-effect", flow, restart_delay=0.5,
                        cold=True))
    result = run_chaos(celery_settings, options,
                       EvidenceStore(celery_settings.project_dir / "evidence"))
    instance = only(result)

    assert "SIGQUIT" in next(e.detail for e in _timeline(result) if e.kind == "fault-fired")
    assert instance.verdict is Verdict.LOST
    assert applied(celery_settings, instance, "activate") == []
    assert applied(celery_settings, instance, "notify") == []


@pytest.mark.parametrize("engine", ["temporal", "celery-chain"])
def test_a_fault_among_several_instances_hits_the_one_at_its_point_and_judges_all(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    """Three instances, one armed point: the fault fires once the first reaches it; the
    points the others never reached are disarmed, not reported as reached."""
    result = chaos(settings, flow_file("chaos"), engine, "kill-worker",
                   "activate:after-effect", profile="tuned", instances=3, timeout=60)

    assert result.fired, result.reason
    assert result.evidence is not None
    assert result.evidence.exists()
    assert len(result.instances) == 3
    at_point = [i for i in result.instances
                if i.resume is not None and i.resume.in_flight == "activate"]
    assert at_point, "the instance at the armed point was not counted as hit"
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * 3
    for instance in result.instances:
        assert applied(settings, instance, "notify") == [Outcome.APPLIED]


def test_a_fault_meant_for_every_instance_fires_until_each_was_hit_at_its_point(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = chaos(settings, flow_file("chaos"), "temporal", "kill-worker",
                   "activate:before-effect", instances=3, timeout=60, hit="all")

    assert result.fired, result.reason
    assert [i.resume is not None and i.resume.in_flight for i in result.instances] == [
        "activate"] * 3
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * 3
    assert result.verdict.passed, result.verdict.failures
    for instance in result.instances:
        assert applied(settings, instance, "activate") == [Outcome.APPLIED]


@pytest.mark.rabbitmq
def test_celery_chain_on_rabbitmq_judges_a_lost_instance_lost_among_finished_ones(
        on_rabbitmq: Settings, flow_file: FlowFactory) -> None:
    """RabbitMQ shows a queue's messages only to whoever consumes them; its ready count
    (a passive declare) and the workers' own lists of reserved and active tasks are
    enough to tell that nothing holds the instance whose task died with its worker,
    whatever its stale STARTED state in the result backend says."""
    result = chaos(on_rabbitmq, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:before-effect", instances=3, timeout=30)

    assert result.fired, result.reason
    [hit] = [i for i in result.instances
             if i.resume is not None and i.resume.affected_as == "at the fault point"]
    assert hit.verdict is Verdict.LOST, hit.reason
    assert applied(on_rabbitmq, hit, "activate") == []
    others = [i for i in result.instances if i is not hit]
    assert [i.verdict for i in others] == [Verdict.COMPLETED] * 2
    # Their tasks waited behind the killed worker's (queued, or prefetched and given
    # back): held up, if anything, never hit at the point.
    assert all(i.resume is None or i.resume.held_up for i in others), [
        i.resume for i in others]
    assert result.evidence is not None
    servers = EvidenceStore(result.evidence.parents[1]).load_run(
        result.run_id).environment.servers
    assert (servers["broker"] or "").startswith("RabbitMQ 3."), servers  # an external broker too


def test_a_run_whose_fault_never_fired_does_not_pass(settings: Settings,
                                                     flow_file: FlowFactory) -> None:
    """Every instance compensates before it reaches the armed step: each one is fine,
    but the run shows nothing about the fault, so it is no pass."""
    path = flow_file("chaos")
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine="temporal", instances=3, timeout=30,
                       decisions=approve_all(flow),
                       failures=(Failure("reserve", "permanent"),)),
        plan=parse_plan("kill-worker", "activate:before-effect", flow, restart_delay=0.5))
    result = run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))

    assert not result.fired
    assert [i.verdict for i in result.instances] == [Verdict.COMPENSATED] * 3
    assert not result.verdict.passed
    assert any("the fault never fired" in f for f in result.verdict.failures)
    with pytest.raises(AssertionError, match="the fault never fired"):
        ChaosOutcome(result, flow).assert_ok()


def test_a_warm_stop_lets_the_step_in_hand_continue_which_is_no_resume(
        celery_settings: Settings, flow_file: FlowFactory) -> None:
    """SIGTERM to the worker's main process: Celery waits for the running task, and
    finishes it in the same process and attempt, its effect once. That is a
    continuation, reported apart from a resume, with no time to resume.

    The other instances were in flight too: their next tasks sat behind the one in hand
    (queued, or prefetched by the stopping worker, which gives them back unstarted). None
    of their attempts was cut short, but each waited for the replacement worker: held
    up, with the delay the stop cost it, never counted as interrupted or continued."""
    result = chaos(celery_settings, flow_file("chaos"), "celery-chain", "stop-worker",
                   "activate:before-effect", instances=3)
    fired = _fired_at(result)
    ledger = Ledger(celery_settings.ledger)

    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * 3
    [hit] = [i for i in result.instances
             if i.resume is not None and i.resume.affected_as == "at the fault point"]
    assert hit.resume is not None
    assert hit.resume.exact
    assert hit.resume.continued
    assert hit.resume.time_to_resume is None
    assert applied(celery_settings, hit, "activate") == [Outcome.APPLIED]
    others = [i for i in result.instances if i is not hit]
    for other in others:
        effects = ledger.effects(instance_id=other.instance_id)
        assert effects[-1].started_at > fired, "every other instance was still in flight"
        assert other.resume is not None, f"{other.instance_id} waited, and is not counted"
        assert other.resume.held_up, other.resume
        assert not other.resume.interrupted
        assert not other.resume.continued
        assert all(e.attempt == 1 for e in effects)  # no attempt of its own cut short
        assert other.resume.time_to_resume is not None
        first_after = min(e.started_at for e in effects if e.started_at >= fired)
        assert 0 < other.resume.time_to_resume <= first_after - fired + 0.001
    assert result.verdict.hit_by_fault == 3
    assert result.verdict.held_up == 2
    assert result.verdict.interrupted == 0
    assert result.verdict.passed, result.verdict.failures


def test_every_instance_whose_attempt_the_kill_cut_short_is_judged(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Five instances under one worker kill: besides the one at the armed point, any
    whose activity died with the worker (a later attempt after the fault that no failed
    attempt explains) counts as hit, with its interrupted step and its resume.

    The one at the armed point is resumed at the step in flight: its activity is retried
    after its start-to-close timeout (3 s in this flow), on the replacement worker, and
    no step before it runs again."""
    result = chaos(settings, flow_file("chaos"), "temporal", "kill-worker",
                   "activate:before-effect", instances=5, timeout=60)
    ledger = Ledger(settings.ledger)

    assert result.fired, result.reason
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * 5
    at_point = next(e.instance for e in _timeline(result) if e.kind == "fault-point-reached")
    [armed] = [i for i in result.instances if i.instance_id == at_point]
    resumed_at_the_step_in_flight(settings, result, armed)
    fired = next(e.at for e in _timeline(result) if e.kind == "fault-fired")
    assert result.evidence is not None
    started = EvidenceStore(result.evidence.parents[1]).load_run(result.run_id).started_at
    assert started is not None
    for instance in result.instances:
        retried = [e for e in ledger.effects(instance_id=instance.instance_id)
                   if e.attempt > 1 and e.started_at >= started + fired]
        if retried:
            assert instance.resume is not None, f"{instance.instance_id} was cut short"
            assert instance.resume.in_flight == retried[0].step
        timed_out = [e for e in _history(result, instance) if e.kind.endswith(
            "_timed_out") and e.at >= started + fired]
        if timed_out:
            assert instance.resume is not None, f"{instance.instance_id} was held up"
    assert result.verdict.hit_by_fault == sum(1 for i in result.instances if i.resume)
    assert result.verdict.passed, result.verdict.failures
