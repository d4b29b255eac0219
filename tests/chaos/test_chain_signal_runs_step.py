"""The chain's signal task runs the step after its wait (docs/adr/0015, decision 4): a
worker killed while that task runs the step is judged as Celery behaves, on a real
worker killed by a real signal. Late acknowledgement redelivers the signal, whose claim
knows its own message and runs the step again (and the instance is held until then);
early acknowledgement loses the message and the instance with it; a killed pool child
fails the chain where the step was.
"""

from __future__ import annotations

import pytest

from graduate.check import Verdict
from graduate.config import Settings
from graduate.ledger import Ledger, Outcome
from tests.chaos.test_faults import _history, _timeline, applied, chaos, only
from tests.conftest import CRASH_TIMING, FlowFactory

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

# The chaos flow with its timer taken out: the step `activate` follows the wait, so the
# wait's signal task runs it.
NO_TIMER = {'[[nodes]]\ntimer = "cool_off"\nduration = "300ms"\n\n': ""}


def test_a_signal_redelivered_after_its_claim_runs_the_step_again(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Late acknowledgement (tuned): the worker is killed after the step's effect landed
    in the signal task; the claim is taken, but the signal message comes back after the
    visibility timeout and, finding its own claim, runs the step again (absorbed) and
    sends the rest. Until then the dead worker's unacknowledged signal is what holds the
    instance: the run does not end early judging it lost."""
    result = chaos(settings, flow_file("chaos", **NO_TIMER), "celery-chain", "kill-worker",
                   "activate:after-effect", profile="tuned", timeout=45)
    instance = only(result)

    assert instance.verdict is Verdict.COMPLETED, instance.reason
    assert applied(settings, instance, "activate") == [Outcome.APPLIED, Outcome.ABSORBED]
    assert applied(settings, instance, "notify") == [Outcome.APPLIED]
    first, again = [e for e in Ledger(settings.ledger).effects(instance_id=instance.instance_id)
                    if e.step == "activate"]
    assert again.started_at - first.started_at >= 10.0  # the visibility timeout
    kinds = {(e.kind, e.detail) for e in _history(result, instance)}
    assert ("task redelivered", "activate: delivery 2 of attempt 1") in kinds
    # The step's result is stored under its own task ID, as its own task stores it.
    assert ("task SUCCESS", "activate") in kinds
    assert not any(e.detail.startswith("ended early") for e in _timeline(result))
    assert instance.resume is not None
    assert instance.resume.reran == ("activate",)


def test_a_signal_acknowledged_early_is_lost_with_its_step(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Celery's defaults: the signal message was acknowledged when the worker took it;
    killed before the step's effect, nothing holds the instance any more (the wait is
    claimed), and the run ends early judging it lost."""
    result = chaos(settings, flow_file("chaos", **NO_TIMER), "celery-chain", "kill-worker",
                   "activate:before-effect", timeout=90)
    instance = only(result)

    assert instance.verdict is Verdict.LOST, instance.reason
    assert applied(settings, instance, "activate") == []
    assert applied(settings, instance, "notify") == []
    ended = _timeline(result)[-1]
    assert ended.detail.startswith(f"ended early: nothing holds {instance.instance_id}")


def test_a_pool_child_killed_in_the_signal_task_fails_the_chain_at_the_step(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Only the pool child killed while the signal task runs the step: the worker
    records the signal task failed (WorkerLostError), which is where the step ran, and
    the chain stops there visibly, as it does when the step's own task is killed."""
    instance = only(chaos(settings, flow_file("chaos", **NO_TIMER), "celery-chain",
                          "kill-pool-child", "activate:before-effect", timeout=20))

    assert instance.verdict is Verdict.FAILED, instance.reason
    assert "SIGKILL" in instance.reason or "exited" in instance.reason
    assert "activate" in instance.reason
    assert applied(settings, instance, "activate") == []
