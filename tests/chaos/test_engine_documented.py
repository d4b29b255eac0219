"""Engine behaviour that graduate's verdicts rest on, as the engines document it, shown
on the real engines through graduate's own runs (the audit of docs/review: Celery's
Redis caveats, RabbitMQ's redelivery on a lost connection)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from graduate.adapters.celery.chain import send_skips
from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.check import Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import RunOptions, approve_all
from tests.chaos.test_faults import _fired_at, chaos
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

# The chaos flow's wait, with a reminder half-way: under a 30 s deadline its countdown
# is 15 s, longer than the tuned profile's Redis visibility timeout (10 s).
REMINDED = {'deadline = "60s"':
            'deadline = "60s"\nreminder = { at = 0.5, effect = "notify.send_reminder" }'}


def reminders(settings: Settings) -> list[Outcome]:
    return [e.outcome for e in Ledger(settings.ledger).effects()
            if e.step == "approval.reminder" and e.kind == "effect"]


def reminder_skips(settings: Settings, instance_id: str) -> list[dict[str, Any]]:
    """The deliveries of the wait's reminder task that did not send it (ADR 0034)."""
    assert settings.broker_url is not None
    client = redis.Redis.from_url(settings.broker_url)
    try:
        return send_skips(client, instance_id, "approval", "reminder")
    finally:
        client.close()


def test_redis_gives_back_a_countdown_held_past_its_visibility_timeout_by_a_live_worker(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Celery's Redis caveat: a message not acknowledged within the visibility timeout
    goes back to the queue, even while a live worker holds it for its ETA, and each copy
    runs at the ETA. With the tuned profile's 10 s, the 15 s countdown of the reminder
    is delivered again, with no fault at all; the chain's lease on the send (ADR 0034)
    lets one delivery send it, and the notification system, which takes no idempotency
    key, sends it once: the run passes."""
    result = chaos(settings, flow_file("chaos", **REMINDED), "celery-chain", "wait-timeout",
                   None, profile="tuned", wait_deadline=30.0, timeout=60)

    [instance] = result.instances
    assert instance.verdict is Verdict.COMPENSATED
    assert reminders(settings) == [Outcome.APPLIED]
    # The engine's part: Redis gave the held countdown back, and the copy (or copies)
    # found the send in hand elsewhere or done, and did not send it.
    skipped = reminder_skips(settings, instance.instance_id)
    assert skipped, "Redis gave the held countdown back no second time"
    assert {s["why"] for s in skipped} <= {"approval.reminder in hand elsewhere",
                                          "approval.reminder already sent"}
    assert instance.unabsorbed_duplicates == 0
    assert result.verdict.passed, result.verdict.failures


def test_a_visibility_timeout_past_the_farthest_countdown_sends_the_reminder_once(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The same run with the visibility timeout above the countdown, as Celery's docs
    ask of production: the countdown is delivered once, and the reminder sent once. The
    second delivery above is the visibility timeout's, not the chain's."""
    (settings.project_dir / "pyproject.toml").write_text(
        "[tool.graduate.profiles.long_visibility]\n"
        'extends = "tuned"\n'
        '"celery-chain" = { visibility_timeout = 45 }\n')
    result = chaos(settings, flow_file("chaos", **REMINDED), "celery-chain", "wait-timeout",
                   None, profile="long_visibility", wait_deadline=30.0, timeout=60)

    [instance] = result.instances
    assert instance.verdict is Verdict.COMPENSATED
    assert reminders(settings) == [Outcome.APPLIED]
    assert reminder_skips(settings, instance.instance_id) == []
    assert result.verdict.passed, result.verdict.failures


@pytest.mark.rabbitmq
def test_rabbitmq_redelivers_a_killed_workers_late_acknowledged_task_at_once(
        settings: Settings, rabbitmq_url: str, flow_file: FlowFactory) -> None:
    """AMQP gives a consumer's unacknowledged messages back when its connection closes,
    with no visibility timeout: the killed worker's task runs again on the replacement
    sooner than Redis could give it back (its visibility timeout, 10 s in the tuned
    profile, counted from the delivery)."""
    on = replace(settings, broker_url=rabbitmq_url, result_backend_url=settings.broker_url)
    result = chaos(on, flow_file("chaos"), "celery-chain", "kill-worker",
                   "activate:before-effect", profile="tuned", timeout=40)

    assert_activated_again_soon_after_the_fault(on, result)


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def either_broker(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Redis, then RabbitMQ (GRADUATE_TEST_RABBITMQ_URL); results stay in Redis."""
    if request.param == "redis":
        return settings
    url: str = request.getfixturevalue("rabbitmq_url")
    return replace(settings, broker_url=url, result_backend_url=settings.broker_url)


def test_a_cold_shutdown_gives_a_late_acknowledged_task_back_at_once(
        either_broker: Settings, flow_file: FlowFactory) -> None:
    """SIGQUIT does not wait for the task in hand, but a worker shutting down cold still
    closes its broker channel: kombu's Redis transport then restores the channel's
    unacknowledged messages (`restore_at_shutdown`), RabbitMQ requeues a closed
    channel's. Acknowledged late, the task runs again on the replacement long before a
    Redis visibility timeout (10 s) would give it back. (Acknowledged early, it is lost:
    test_faults' test_celery_cold_shutdown_abandons_the_task_in_hand.)"""
    settings = either_broker
    result = chaos_cold(settings, flow_file("chaos"))

    assert_activated_again_soon_after_the_fault(settings, result)
    assert result.verdict.passed, result.verdict.failures


def assert_activated_again_soon_after_the_fault(settings: Settings,
                                                result: ChaosResult) -> None:
    """The one instance completed, its `activate` applied on a second attempt less than
    10 s after the fault: sooner than the tuned Redis visibility timeout would allow."""
    [instance] = result.instances
    assert instance.verdict is Verdict.COMPLETED
    [again] = [e for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
               if e.step == "activate" and e.kind == "effect"]
    assert again.outcome is Outcome.APPLIED
    assert again.attempt == 2
    assert again.started_at - _fired_at(result) < 10.0


def chaos_cold(settings: Settings, path: Path) -> ChaosResult:
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine="celery-chain", timeout=40,
                       decisions=approve_all(flow)),
        plan=parse_plan("stop-worker", "activate:before-effect", flow, restart_delay=0.5,
                        cold=True), profile="tuned")
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))
