"""The crash-resume suite on a team's own code: the partner approval example
(examples/partner_approval_app/), declared in the repository's pyproject.toml, run by
graduate's pytest plugin exactly as a team's CI runs its app: `chaos("APP", ...)`.

Three instances are in flight when the worker holding the armed step is killed (SIGKILL
to its process group); each test asserts what the engine's semantics predict:

- Temporal records the workflow's progress in the server: every instance resumes at the
  step in flight. Killed before the e-signature request, nothing runs twice; killed after
  a call but before its activity completed, the activity is retried: the e-signature
  provider absorbs the repeated envelope by its key, while the notification service,
  which takes no idempotency key, sends the confirmation a second time.
- The Celery app acknowledges late (its own settings). With the Redis transport an
  unacknowledged task comes back only after the visibility timeout: an hour by default,
  so within the run the broker still holds the task and the instance is stuck. With the
  tuned profile (a 10 s visibility timeout) the task comes back and runs again: the
  envelope is requested twice, the provider absorbing the second. With Celery's default
  early acknowledgement (the project's "early-ack" profile) the task in hand is gone with
  its worker, and with it the rest of the chain: the envelope is out and the partner
  never confirmed. The approval's deadline countdown is still held by the broker, so
  graduate calls the instance stuck rather than lost: it cannot know that the countdown
  will do nothing to an approved partner.

The other faults an app takes, each asserted per instance and per effect: a killed pool
child (the Celery worker gives the late-acknowledged task back at once), a broker
restart under a paused task (nothing lost, nothing repeated), and a second start of a
business key in flight (refused by the Temporal server, and by the Celery team's own
table). The example declares its systems' audit reader, so every run here also checks
that each commitment left its audit record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from graduate.check import InstanceVerdict, Verdict
from graduate.testing.outcome import ChaosOutcome
from graduate.testing.plugin import ChaosRunner
from tests.conftest import CRASH_TIMING_APPS

APP = "partner_approval_app"
INSTANCES = 3
pytestmark = [pytest.mark.slow, CRASH_TIMING_APPS]


@pytest.fixture(autouse=True)
def example_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Celery version's own table and the systems' audit log, in the test's folder
    (the app's workers inherit them)."""
    monkeypatch.setenv("PARTNER_APPROVAL_DB", str(tmp_path / "approvals.sqlite3"))
    monkeypatch.setenv("PARTNER_APPROVAL_AUDIT_DB", str(tmp_path / "audit.sqlite3"))


def recorded_settings(outcome: ChaosOutcome) -> dict[str, Any]:
    """The engine settings the run's evidence records."""
    assert outcome.result.evidence is not None
    record = json.loads(outcome.result.evidence.read_text(encoding="utf-8"))
    settings: dict[str, Any] = record["settings"]
    return settings


FORWARD = ("validate_partner", "create_packet", "update_crm", "send_esign",
           "send_confirmation")


def applied(instance: InstanceVerdict, step: str) -> int:
    return sum(e.applied + e.absorbed for e in instance.effects
               if e.step == step and e.kind == "effect")


def absorbed(instance: InstanceVerdict, step: str) -> int:
    return sum(e.absorbed for e in instance.effects if e.step == step and e.kind == "effect")


def test_temporal_resumes_every_instance_at_the_step_in_flight(chaos: ChaosRunner) -> None:
    outcome = chaos(APP, engine="temporal", fault="kill-worker", at="send_esign:before-effect",
                    instances=INSTANCES, timeout=90)

    outcome.assert_ok()
    outcome.assert_all(Verdict.COMPLETED)
    assert outcome.result.engine == "temporal-app"
    assert any(i.resume is not None for i in outcome.instances)
    for instance in outcome.instances:
        assert [applied(instance, s) for s in FORWARD] == [1, 1, 1, 1, 1]


def retried_in_flight(instance: InstanceVerdict) -> str:
    """The step the kill caught `instance` in, checked: Temporal resumed it exactly there,
    and ran it again if its effect had landed (at the armed point, or, for an instance
    whose attempt died with the worker, just past it); the repeat is absorbed by the key
    where the system honours it, and is a second email from the notification service."""
    resume = instance.resume
    assert resume is not None
    assert resume.exact
    assert resume.resumed_at == resume.in_flight
    step = resume.in_flight
    landed = resume.point == "after-effect"
    assert applied(instance, step) == (2 if landed else 1)
    if step == "send_confirmation":
        assert absorbed(instance, step) == 0  # nothing absorbs an email
    elif landed:
        assert absorbed(instance, step) == 1
    # Else one call: applied, or absorbed when the system had taken the key as the worker
    # died, before graduate.effect could record the call.
    assert [applied(instance, s) for s in FORWARD if s != step] == [1, 1, 1, 1]
    return step


def test_temporal_retries_the_step_in_flight_and_the_unkeyed_confirmation_is_sent_twice(
        chaos: ChaosRunner) -> None:
    outcome = chaos(APP, engine="temporal", fault="kill-worker",
                    at="send_confirmation:after-effect", instances=INSTANCES, timeout=90)

    outcome.assert_all(Verdict.COMPLETED)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        retried_in_flight(instance)
    at_point = [i for i in hit if i.resume is not None and not i.resume.interrupted]
    assert at_point
    for instance in at_point:
        assert retried_in_flight(instance) == "send_confirmation"
        assert applied(instance, "send_confirmation") == 2  # nothing absorbs an email


def test_temporal_retries_the_step_in_flight_and_the_provider_absorbs_the_keyed_envelope(
        chaos: ChaosRunner) -> None:
    outcome = chaos(APP, engine="temporal", fault="kill-worker", at="send_esign:after-effect",
                    instances=INSTANCES, timeout=90)

    outcome.assert_ok()
    outcome.assert_all(Verdict.COMPLETED)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        retried_in_flight(instance)
    at_point = [i for i in hit if i.resume is not None and not i.resume.interrupted]
    assert at_point
    for instance in at_point:
        # The retry reaches the provider again, which absorbs it by its key: one envelope.
        assert retried_in_flight(instance) == "send_esign"
        assert absorbed(instance, "send_esign") == 1


def test_celery_late_ack_keeps_the_task_in_the_broker_until_the_visibility_timeout(
        chaos: ChaosRunner) -> None:
    outcome = chaos(APP, engine="celery", fault="kill-worker", at="send_esign:after-effect",
                    instances=INSTANCES, timeout=30)

    # The app's own settings are what evidence records (Celery's prefetch default is 4).
    settings = recorded_settings(outcome)
    assert (settings["task_acks_late"], settings["worker_prefetch_multiplier"],
            settings["visibility_timeout"]) == (True, 1, 3600)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        assert instance.verdict is Verdict.STUCK, instance.reason
        assert "still holds it" in instance.reason
        assert applied(instance, "send_esign") == 1
        assert applied(instance, "send_confirmation") == 0


def test_celery_late_ack_with_a_short_visibility_timeout_runs_the_task_again(
        chaos: ChaosRunner) -> None:
    outcome = chaos(APP, engine="celery", fault="kill-worker", at="send_esign:after-effect",
                    instances=INSTANCES, profile="tuned", timeout=90)

    # The profile's overrides, over the app's own settings.
    settings = recorded_settings(outcome)
    assert (settings["task_acks_late"], settings["visibility_timeout"]) == (True, 10)
    outcome.assert_all(Verdict.COMPLETED)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        assert instance.resume is not None
        assert instance.resume.resumed_at == "send_esign"
        # The task ran again; the provider absorbed the repeated envelope by its key.
        assert applied(instance, "send_esign") == 2
        assert absorbed(instance, "send_esign") == 1
        assert applied(instance, "send_confirmation") == 1


def test_celery_early_ack_loses_the_task_in_hand_and_the_rest_of_the_chain(
        chaos: ChaosRunner) -> None:
    # The project's profile "early-ack": the tuned profile with Celery's default ack.
    outcome = chaos(APP, engine="celery", fault="kill-worker", at="send_esign:after-effect",
                    instances=INSTANCES, profile="early-ack", timeout=30)

    settings = recorded_settings(outcome)
    assert (settings["task_acks_late"], settings["visibility_timeout"]) == (False, 10)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        # Acknowledged before it ran: even with the visibility timeout that brings a
        # late-acknowledged task back in 10 s, send_esign never runs again, nor
        # send_confirmation.
        # The deadline countdown is all the broker still holds of it.
        assert instance.verdict is Verdict.STUCK, instance.reason
        assert instance.resume is not None
        assert instance.resume.resumed_at is None
        assert applied(instance, "send_esign") == 1
        assert applied(instance, "send_confirmation") == 0


@pytest.mark.parametrize(("engine", "refusal"), [
    ("temporal", "workflow .* is already running"),
    ("celery", "the team's start function refused it: IntegrityError"),
])
def test_a_second_start_of_a_business_key_in_flight_is_refused_and_repeats_nothing(
        chaos: ChaosRunner, engine: str, refusal: str) -> None:
    # Temporal refuses a second workflow with a running one's ID; the Celery team's own
    # table refuses a second row for the instance before its start sends anything.
    outcome = chaos(APP, engine=engine, fault="double-start", at="approval:during-wait",
                    instances=2, timeout=90)

    outcome.assert_ok()
    outcome.assert_all(Verdict.COMPLETED)
    started_twice = [i for i in outcome.instances if i.starts is not None]
    assert started_twice
    for instance in started_twice:
        assert instance.starts is not None
        assert instance.starts.starts == 2
        [refused] = instance.starts.refused
        assert re.search(refusal, refused), refused
        assert len(instance.starts.effect_sets) == 1
    for instance in outcome.instances:
        assert [applied(instance, s) for s in FORWARD] == [1, 1, 1, 1, 1]


def test_celery_a_killed_pool_child_gives_its_late_acknowledged_task_back_at_once(
        chaos: ChaosRunner) -> None:
    # The worker's main process sees its child die and, with the app's
    # task_reject_on_worker_lost, puts the unacknowledged task back on the queue at once:
    # no visibility timeout to wait for (compare the kill of the whole worker above).
    outcome = chaos(APP, engine="celery", fault="kill-pool-child", at="send_esign:after-effect",
                    instances=INSTANCES, timeout=90)

    outcome.assert_all(Verdict.COMPLETED)
    # At the point or cut short: an instance only held up behind them is not this case.
    hit = [i for i in outcome.instances if i.resume is not None and not i.resume.held_up]
    assert hit
    for instance in hit:
        assert instance.resume is not None
        assert instance.resume.resumed_at == "send_esign"
        # The task ran again; the provider absorbed the repeated envelope by its key.
        assert applied(instance, "send_esign") == 2
        assert absorbed(instance, "send_esign") == 1
        assert applied(instance, "send_confirmation") == 1


def test_celery_a_broker_restart_under_a_paused_task_loses_and_repeats_nothing(
        chaos: ChaosRunner) -> None:
    # Redis comes back on its append-only file, so the queued messages (the rest of each
    # chain, the deadline countdowns) survive; the task paused before the envelope call
    # lives on in its worker, which reconnects, and carries on once.
    outcome = chaos(APP, engine="celery", fault="restart-broker", at="send_esign:before-effect",
                    instances=INSTANCES, timeout=60)

    outcome.assert_ok()
    outcome.assert_all(Verdict.COMPLETED)
    [hit] = [i for i in outcome.instances
             if i.resume is not None and i.resume.affected_as == "at the fault point"]
    assert hit.resume is not None
    assert hit.resume.continued
    # The others' next tasks waited for the broker: held up, if anything, never cut short.
    assert all(i.resume is None or i.resume.held_up for i in outcome.instances
               if i is not hit)
    for instance in outcome.instances:
        assert [applied(instance, s) for s in FORWARD] == [1, 1, 1, 1, 1]
