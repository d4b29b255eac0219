"""The time scale: how it is written, what it scales, its floors, and its record; and a
step's work as the flow reads and writes it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.errors import ConfigError, EvidenceError, FlowError
from graduate.flow import Flow, Step, Timer, Wait, flow_from_dict, flow_to_dict, load_flow
from graduate.runs.record import RunRecord
from graduate.timescale import FLOORS, TimeScale, scaled_flow

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "reports" / "data" / "run-temporal-kill-worker.json"

LONG_FLOW = """
[flow]
name = "onboarding"
version = 1
approval_class = "A1"
reversibility_class = "R1"
sensitivity_class = "S1"

[systems.crm]
honours_idempotency = true

[[nodes]]
step = "prepare"
effect = "crm.prepare"
work = "30m"
timeout = "2h"
retry = { max_attempts = 3, initial_interval = "10m", maximum_interval = "1h" }

[[nodes]]
timer = "cool_off"
duration = "2h"

[[nodes]]
wait = "approval"
deadline = "72h"
on_timeout = "continue"

[[nodes]]
step = "activate"
effect = "crm.activate"
timeout = "10s"
"""


@pytest.fixture
def long_flow(tmp_path: Path) -> Flow:
    path = tmp_path / "onboarding.toml"
    path.write_text(LONG_FLOW)
    return load_flow(path)


@pytest.mark.parametrize(("text", "factor"), [
    ("1h=1s", 3600.0), ("1d=1m", 1440.0), (" 1h = 2s ", 1800.0), ("3600", 3600.0),
    (60, 60.0), (1, 1.0), ("1", 1.0),
])
def test_a_scale_is_written_as_flow_time_to_run_time_or_as_a_factor(
        text: str | float, factor: float) -> None:
    assert TimeScale.parse(text).factor == factor


@pytest.mark.parametrize("text", ["fast", "1s=1h", "0", "0.5", "1h=0s", "1h=", "=1s",
                                  "nan", "inf", "1h=1s=1ms", True, -3])
def test_a_scale_that_is_no_compression_is_refused_with_how_to_write_one(
        text: object) -> None:
    with pytest.raises(ConfigError) as caught:
        TimeScale.parse(text)  # type: ignore[arg-type]
    assert "1h=1s" in str(caught.value)


def test_every_duration_of_the_flow_is_divided_by_the_factor(long_flow: Flow) -> None:
    scaled, record = TimeScale.parse("1h=1s").apply(long_flow)

    prepare = scaled.node("prepare")
    assert isinstance(prepare, Step)
    assert prepare.work == pytest.approx(0.5)
    assert prepare.retry.maximum_interval == pytest.approx(1.0)
    assert prepare.retry.initial_interval == pytest.approx(10 * 60 / 3600)
    cool_off, approval = scaled.node("cool_off"), scaled.node("approval")
    assert isinstance(cool_off, Timer)
    assert cool_off.duration == pytest.approx(2.0)
    assert isinstance(approval, Wait)
    assert approval.deadline == pytest.approx(72.0)
    assert record.factor == 3600
    assert record.label == "1h=1s"
    by_name = {(d.item, d.name): d for d in record.durations}
    assert by_name[("wait approval", "deadline")].real == 72 * 3600
    assert by_name[("step prepare", "work")].scaled == pytest.approx(0.5)
    assert "not scaled" in record.engine_settings


def test_a_scaled_timeout_keeps_its_floor_and_the_record_says_so(long_flow: Flow) -> None:
    scaled, record = TimeScale.parse("1h=1s").apply(long_flow)

    prepare, activate = scaled.node("prepare"), scaled.node("activate")
    assert isinstance(prepare, Step)
    assert isinstance(activate, Step)
    # 2 h would be 2 s: raised to the floor; 10 s, already below it, stays 10 s.
    assert prepare.timeout == FLOORS["timeout"]
    assert activate.timeout == 10.0
    floored = {(d.item, d.name) for d in record.durations if d.floored}
    assert ("step prepare", "timeout") in floored
    assert ("step activate", "timeout") in floored
    assert ("wait approval", "deadline") not in floored
    assert "kept at their floor" in record.describe()


def test_a_step_meant_to_outlast_its_timeout_is_not_silently_made_to_fit(
        tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    path.write_text(LONG_FLOW.replace('work = "30m"\ntimeout = "2h"',
                                      'work = "3h"\ntimeout = "2h"'))
    flow = load_flow(path)
    with pytest.raises(ConfigError) as caught:
        TimeScale.parse("1h=1s").apply(flow)
    assert "prepare" in str(caught.value)
    assert "smaller factor" in str(caught.value)
    # A factor that keeps the timeout above its floor keeps the step outlasting it.
    slower, _ = TimeScale.parse("1h=10s").apply(flow)
    step = slower.node("prepare")
    assert isinstance(step, Step)
    assert step.work > step.timeout


def test_real_time_leaves_the_flow_and_its_file_alone(long_flow: Flow, tmp_path: Path) -> None:
    same, record = scaled_flow(long_flow, TimeScale(), tmp_path / "derived")
    assert same is long_flow
    assert record is None
    assert not (tmp_path / "derived").exists()


def test_the_scaled_flow_is_written_for_the_workers(long_flow: Flow, tmp_path: Path) -> None:
    scaled, record = scaled_flow(long_flow, TimeScale.parse("1h=1s"), tmp_path / "derived")
    assert record is not None
    assert load_flow(scaled.source) == scaled


def test_a_run_record_keeps_its_time_scale(long_flow: Flow) -> None:
    _, record = TimeScale.parse("1d=1m").apply(long_flow)
    stored = RunRecord.from_dict(json.loads(FIXTURE.read_text()))
    scaled = replace(stored, options=replace(stored.options, time_scale=record))
    data = json.loads(json.dumps(scaled.to_dict()))  # as the store writes it
    assert RunRecord.from_dict(data).options.time_scale == record
    data["options"]["time_scale"]["factor"] = "fast"
    with pytest.raises(EvidenceError, match="time_scale"):
        RunRecord.from_dict(data)


# ---------------------------------------------------------------------------- step work


def test_a_step_declares_how_long_its_work_takes(long_flow: Flow) -> None:
    step = long_flow.node("prepare")
    assert isinstance(step, Step)
    assert step.work == 1800.0
    again = flow_from_dict(flow_to_dict(long_flow))
    assert again.node("prepare") == step
    activate = long_flow.node("activate")
    assert isinstance(activate, Step)
    assert activate.work == 0.0
    assert "work" not in flow_to_dict(long_flow)["nodes"][3]


@pytest.mark.parametrize(("value", "fragment"), [
    ("-5", "must not be negative"), ('"soon"', "is not a duration"),
    ('"400d"', "finite one of at most"),
])
def test_a_work_that_is_no_duration_is_refused_naming_the_step(
        tmp_path: Path, value: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(LONG_FLOW.replace('work = "30m"', f"work = {value}"))
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert "prepare" in str(caught.value)
    assert fragment in str(caught.value)


def test_the_steps_of_a_parallel_group_are_scaled_too(tmp_path: Path) -> None:
    path = tmp_path / "grouped.toml"
    path.write_text(LONG_FLOW.replace('''[[nodes]]
step = "activate"''', '''[[nodes]]
parallel = "checks"

[[nodes.steps]]
step = "credit"
effect = "crm.credit"
work = "1h"
timeout = "3h"

[[nodes.steps]]
step = "fraud"
effect = "crm.fraud"
work = "2h"
timeout = "3h"

[[nodes]]
step = "activate"'''))
    scaled, record = TimeScale.parse("1h=1s").apply(load_flow(path))

    works = {s.name: s.work for s in scaled.steps}
    assert works["credit"] == pytest.approx(1.0)
    assert works["fraud"] == pytest.approx(2.0)
    assert ("step fraud", "timeout") in {(d.item, d.name) for d in record.durations}
    assert [g.name for g in scaled.groups] == ["checks"]
