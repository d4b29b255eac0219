"""A team's own Celery app ends a kill-worker run early when every unfinished instance is
held only by what the killed worker took (ADR 0020): the example app
(examples/partner_approval_app/), run as a team's CI runs it, a real worker killed with
SIGKILL at the e-signature request.

graduate's worker module marks each task the app's worker receives, by instance, before
it acknowledges it; `CeleryAppEngine.held_until` proves the taker dead (its process is
gone from this host) and that nothing else can move the instance sooner (Redis gives an
unacknowledged message back only after the visibility timeout; a countdown waits for its
ETA). The run then ends without waiting for its deadline, and every verdict is the one
the deadline would give.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.check import Verdict
from graduate.evidence import EvidenceStore
from graduate.runs.timeline import TimelineEvent
from graduate.testing.outcome import ChaosOutcome
from graduate.testing.plugin import ChaosRunner
from tests.conftest import CRASH_TIMING_APPS

APP = "partner_approval_app"
pytestmark = [pytest.mark.slow, CRASH_TIMING_APPS]


@pytest.fixture(autouse=True)
def example_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Celery version's own table and the systems' audit log, in the test's folder."""
    monkeypatch.setenv("PARTNER_APPROVAL_DB", str(tmp_path / "approvals.sqlite3"))
    monkeypatch.setenv("PARTNER_APPROVAL_AUDIT_DB", str(tmp_path / "audit.sqlite3"))


def timeline(outcome: ChaosOutcome) -> list[TimelineEvent]:
    result = outcome.result
    assert result.evidence is not None
    return list(EvidenceStore(result.evidence.parents[1]).load_run(result.run_id).timeline)


def assert_ended_early_with_the_held_up_stuck(outcome: ChaosOutcome) -> dict[str, str]:
    """The run ended early, and the instances it judged stuck are the held-up ones:
    their held-up events, by instance."""
    events = timeline(outcome)
    held_up = {e.instance: e.detail for e in events if e.kind == "held-up" and e.instance}
    stuck = {i.instance_id for i in outcome.instances if i.verdict is Verdict.STUCK}
    assert stuck
    assert set(held_up) == stuck, events
    assert events[-1].detail.startswith("ended early: nothing can move "), events[-1]
    for instance in outcome.instances:
        if instance.instance_id not in stuck:
            assert instance.verdict is Verdict.COMPLETED, instance.reason
    return held_up


def test_late_ack_a_killed_workers_unacknowledged_task_ends_the_run_early(
        chaos: ChaosRunner) -> None:
    # The app's own settings: late ack, Redis's default visibility timeout (an hour).
    outcome = chaos(APP, engine="celery", fault="kill-worker", at="send_esign:after-effect",
                    instances=3, timeout=120)

    held_up = assert_ended_early_with_the_held_up_stuck(outcome)
    for detail in held_up.values():
        assert "now dead, took and never acknowledged" in detail
        assert "visibility timeout (3600 s)" in detail


def test_early_ack_an_instance_whose_task_died_is_held_only_by_its_countdown(
        chaos: ChaosRunner) -> None:
    # Early ack: the task in hand is gone with its worker; the approval's deadline
    # countdown (72 h) is all that holds the instance, whoever holds that message.
    outcome = chaos(APP, engine="celery", fault="kill-worker", at="send_esign:after-effect",
                    instances=3, profile="early-ack", timeout=120)

    held_up = assert_ended_early_with_the_held_up_stuck(outcome)
    for instance in outcome.instances:
        if instance.instance_id in held_up:
            assert instance.reason.startswith("the engine still holds it"), instance.reason
