"""Time on real engines: a weeks-long flow under a time scale, and long steps meeting the
engines' own timeouts (Temporal's heartbeat timeout, Redis's visibility timeout).

The engines' recovery settings are real seconds (a time scale leaves them alone), so a
long step's work, scaled or not, is what meets them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import graduate
from graduate.adapters.base import InstanceState
from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.runner import RunOptions, approve_all, run_flow
from graduate.timescale import TimeScale
from tests.conftest import CRASH_TIMING, FlowFactory

# Only the tests of a long step meeting an engine's recovery timeout (a heartbeat, a
# visibility timeout, a few seconds of real time) run in the crash lane: a late heartbeat
# or a starved worker there changes the verdict. The runs with no fault assert bounds
# (at least the scaled time, well under the deadline) that CPU beside them cannot break:
# off the lane, they cut its floor under the suite's time by about 51 s (CI rehearsal
# of 30 November 2026 at 05:15).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_orphans")]


def chaos(settings: Settings, path: Path, engine: str, *, fault: str = "none",
          at: str | None = None, profile: str = "defaults", workers: int = 1,
          time_scale: str = "1", engine_settings: dict[str, Any] | None = None,
          timeout: float = 60) -> ChaosResult:
    flow = load_flow(path)
    options = ChaosOptions(
        run=RunOptions(flow=str(path), engine=engine, workers=workers, timeout=timeout,
                       decisions=approve_all(flow), time_scale=TimeScale.parse(time_scale)),
        plan=parse_plan(fault, at, flow, restart_delay=0.5), profile=profile,
        engine_settings=engine_settings)
    return run_chaos(settings, options, EvidenceStore(settings.project_dir / "evidence"))


def calls(settings: Settings, run_id: str, step: str) -> list[EffectRecord]:
    return [e for e in Ledger(settings.ledger).effects(run_id=run_id)
            if e.step == step and e.kind == "effect"]


@pytest.mark.parametrize("engine", ["temporal", "celery-chain", "celery-state-machine"])
def test_a_weeks_long_flow_finishes_in_seconds_under_a_time_scale(
        settings: Settings, flow_file: FlowFactory, engine: str) -> None:
    """A day of work, a two-day timer and a week's wait that times out: at 1d=1s, about
    ten seconds, on every engine, and the work and the wait really take their scaled time."""
    path = flow_file("long")
    began = time.time()
    result = run_flow(settings, RunOptions(flow=str(path), engine=engine, timeout=60,
                                           time_scale=TimeScale.parse("1d=1s")))

    [instance] = result.instances
    assert instance.state is InstanceState.COMPLETED, instance.detail
    assert time.time() - began < 60
    [prepare] = calls(settings, result.run_id, "prepare")
    [activate] = calls(settings, result.run_id, "activate")
    assert prepare.finished_at - prepare.started_at >= 1.0  # its day of work: 1 s
    # The two-day timer and the week's wait (2 s + 7 s) passed between the two steps.
    assert activate.started_at - prepare.finished_at >= 9.0
    assert result.time_scale is not None
    scaled = {(d.item, d.name): d.scaled for d in result.time_scale.durations}
    assert scaled[("wait approval", "deadline")] == 7.0


def test_the_evidence_records_the_time_scale_and_what_it_left_real(
        settings: Settings, flow_file: FlowFactory) -> None:
    result = chaos(settings, flow_file("long"), "temporal", time_scale="1d=1s",
                   profile="tuned")

    record = EvidenceStore(settings.project_dir / "evidence").load_run(result.run_id)
    scale = record.options.time_scale
    assert scale is not None
    assert scale == result.time_scale
    assert scale.factor == 86400
    assert "heartbeat timeout" in scale.engine_settings
    assert "not scaled" in scale.engine_settings
    # The engine's own settings are the profile's, in real seconds, untouched.
    assert record.settings["heartbeat_timeout"] == 2.0
    assert record.flow.load().node("approval").deadline == 7.0  # type: ignore[union-attr]


@CRASH_TIMING
def test_a_long_step_heartbeats_through_its_work_on_temporal(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Ten seconds of work against a 2 s heartbeat timeout: one attempt, never timed out."""
    path = flow_file("long", **{'work = "1d"': 'work = "10m"', 'duration = "2d"':
                                'duration = "1s"', 'deadline = "7d"': 'deadline = "5m"'})
    result = chaos(settings, path, "temporal", profile="tuned", time_scale="1m=1s")

    [instance] = result.instances
    assert instance.verdict == "completed", instance.reason
    [prepare] = calls(settings, result.run_id, "prepare")
    assert prepare.attempt == 1
    assert prepare.finished_at - prepare.started_at >= 10.0


@CRASH_TIMING
def test_a_long_step_killed_mid_work_on_temporal_is_retried_after_its_heartbeat_timeout(
        settings: Settings, flow_file: FlowFactory) -> None:
    """The worker dies three seconds into ten seconds of work. The server notices by the
    missing heartbeats (2 s) and retries the step on the new worker, long before its
    start-to-close timeout (the step's 7 days, scaled to 2.8 hours) would."""
    path = flow_file("long", **{'work = "1d"': 'work = "10m"', 'duration = "2d"':
                                'duration = "1s"', 'deadline = "7d"': 'deadline = "5m"'})
    result = chaos(settings, path, "temporal", fault="kill-worker", at="+3",
                   profile="tuned", time_scale="1m=1s")

    assert result.fired, result.reason
    [instance] = result.instances
    assert instance.verdict == "completed", instance.reason
    # The first attempt died in its work, before its effect: only the retry reached it.
    [prepare] = calls(settings, result.run_id, "prepare")
    assert prepare.attempt == 2
    record = EvidenceStore(settings.project_dir / "evidence").load_run(result.run_id)
    fired_at = record.started_at + record.fault_fired_at  # type: ignore[operator]
    # The retry began within the heartbeat timeout plus the worker's restart, not after
    # the start-to-close timeout; and its ten seconds of work then ran in full.
    assert prepare.started_at - fired_at < 10.0
    assert prepare.finished_at - prepare.started_at >= 10.0
    started = [e.detail for e in record.instances[0].history
               if e.kind == "activity_task_started"]
    assert "attempt 2 after heartbeat timeout" in started
    # The checker saw the attempt the kill cut short, and the step going on after it.
    assert instance.resume is not None
    assert instance.resume.in_flight == "prepare"
    assert result.verdict.passed, result.verdict.failures


@CRASH_TIMING
def test_a_celery_task_working_past_the_visibility_timeout_is_redelivered_while_it_runs(
        settings: Settings, flow_file: FlowFactory) -> None:
    """Late ack on Redis: a task unacknowledged after the visibility timeout (2 s) goes
    back to the queue though its worker is alive and working (8 s), and a second worker
    runs it too. The step's system honours no idempotency key: a duplicate, and the two
    calls overlap in the ledger."""
    path = flow_file("long", **{'work = "1d"': 'work = "8s"', 'timeout = "7d"':
                                'timeout = "60s"', 'duration = "2d"': 'duration = "0s"'})
    tuned = {"task_acks_late": True, "worker_prefetch_multiplier": 1,
             "visibility_timeout": 2, "unacked_restore_interval": 1,
             "unacked_restore_throttle": 1}
    # Every delivery outlasts the visibility timeout, so the task never stops coming
    # back and the run always ends at its deadline; what is asserted (two deliveries
    # overlapping, the first done) is over about 10 s after the instance started, which
    # took 16 s at a load of 13 on two cores.
    result = chaos(settings, path, "celery-chain", workers=2, engine_settings=tuned,
                   timeout=40)

    first, second, *_ = sorted(calls(settings, result.run_id, "prepare"),
                               key=lambda e: e.started_at)
    assert first.outcome is Outcome.APPLIED
    assert second.outcome is Outcome.APPLIED
    assert second.started_at < first.finished_at, "the redelivery ran while the first worked"
    assert first.worker_pid != second.worker_pid
    # What the instance then became depends on which delivery's chain goes on first (each
    # carries the rest of the flow): the duplicate is the finding, whatever follows.
    assert result.verdict.unabsorbed_duplicates >= 1
    assert not result.verdict.passed
    record = EvidenceStore(settings.project_dir / "evidence").load_run(result.run_id)
    assert record.settings["visibility_timeout"] == 2


def test_a_matrix_runs_every_cell_under_its_time_scale_and_records_it(
        settings: Settings, flow_file: FlowFactory) -> None:
    store = EvidenceStore(settings.project_dir / "evidence")
    result = graduate.matrix(str(flow_file("long")), engines=["temporal"],
                             faults=["none"], instances=1, timeout=60,
                             time_scale="1d=1s", settings=settings, evidence=store.root)

    matrix = store.load_matrix(result.matrix_id)
    assert matrix.spec.time_scale == "1d=1s"
    [cell] = result.cells
    assert cell.summary is not None
    assert cell.summary.completed == 1
    run = store.load_run(str(cell.run_id))
    assert run.options.time_scale is not None
    assert run.options.time_scale.factor == 86400
