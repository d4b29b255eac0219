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

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState
from graduate.apps import resolve_target
from graduate.check import Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.runner import RunOptions
from graduate.runs.session import open_session
from graduate.runs.timeline import TimelineEvent
from graduate.testing.outcome import ChaosOutcome
from graduate.testing.plugin import ChaosRunner
from tests.conftest import CRASH_TIMING_APPS

APP = "partner_approval_app"
REPOSITORY = Path(__file__).resolve().parents[2]
APPROVE = {"decision": "approve"}
VISIBILITY_TIMEOUT = 3600.0  # kombu's default, which the example app keeps
pytestmark = [pytest.mark.slow, CRASH_TIMING_APPS]


@pytest.fixture(autouse=True)
def example_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Celery version's own table and the systems' audit log, in the test's folder."""
    monkeypatch.setenv("PARTNER_APPROVAL_DB", str(tmp_path / "approvals.sqlite3"))
    monkeypatch.setenv("PARTNER_APPROVAL_AUDIT_DB", str(tmp_path / "audit.sqlite3"))


def until_true(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `check` (the engine, the ledger) until it holds."""
    ends = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < ends, f"timed out waiting until {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("engine", ["celery-app"])
def test_held_until_proves_a_dead_workers_unacknowledged_task_and_never_a_live_ones(
        settings: Settings, engine: str) -> None:
    target = resolve_target(REPOSITORY, REPOSITORY / "spikes", APP, "celery")
    assert target.engine == engine
    options = RunOptions(flow=target.flow_ref, engine=engine, instances=2, timeout=120,
                         app=target.app)
    with open_session(replace(settings, result_backend_url=settings.broker_url), options,
                      flow=target.flow) as session:
        engine_ = session.engine
        session.start_instances()
        first, second = session.instance_ids
        until_true("both instances wait for their approval", lambda: all(
            engine_.status(iid).state is InstanceState.WAITING for iid in (first, second)))
        # A waiting instance: the app's own timers (its beat) may move it.
        assert engine_.held_until(first) is None
        # The approved chain's first task pauses after its effect, in the worker's hands
        # and (late ack) unacknowledged: its worker lives, so nothing is proven.
        session.ledger.arm(first, "update_crm", "after-effect")
        engine_.signal(first, "approval", APPROVE)
        until_true("the first instance's task paused", lambda: session.ledger.reached(
            first, "update_crm", "after-effect") is not None)
        assert engine_.held_until(first) is None

        [worker] = session.workers.current()
        killed_at = session.workers.kill(worker)
        session.workers.await_exit(worker)
        held_up = engine_.held_until(first)
        assert held_up is not None
        assert killed_at - 60 < held_up.until - VISIBILITY_TIMEOUT <= killed_at
        assert "now dead, took and never acknowledged" in held_up.why
        assert engine_.holds(first)

        # A new worker runs the second instance to its end; the first stays held up:
        # Redis gives its task back only after the visibility timeout.
        session.workers.start(1)
        engine_.signal(second, "approval", APPROVE)
        until_true("the second instance completed", lambda: engine_.status(
            second).state is InstanceState.COMPLETED)
        assert engine_.held_until(second) is None
        assert engine_.status(first).state is InstanceState.RUNNING
        again = engine_.held_until(first)
        assert again is not None
        assert again.until == held_up.until


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
