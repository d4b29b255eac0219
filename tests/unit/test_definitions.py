"""Which definition of its flow a run ran (`graduate.runs.definitions`): what the gates,
reports and runbooks count a run for. Runs are real run records (the report tests'
builder) whose recorded definition is the sample flow, as it is or as it was."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from tests.reports.conftest import EvidenceBuilder
from tests.sample import SAMPLE_FLOW

from graduate.errors import GraduateError
from graduate.flow import Flow, flow_to_dict, load_flow
from graduate.runs.definitions import as_written, by_definition, change, current_definition, ran
from graduate.runs.record import RunRecord
from graduate.timescale import TimeScale

FLOW = "partner_approval"


@pytest.fixture
def flow() -> Flow:
    return load_flow(SAMPLE_FLOW)


@pytest.fixture
def builder(tmp_path: Path) -> EvidenceBuilder:
    return EvidenceBuilder(tmp_path / "evidence")


def without_notify(builder: EvidenceBuilder) -> None:
    """The sample as it was before it gained its last step."""
    builder.definition["nodes"] = [n for n in builder.definition["nodes"]
                                   if n.get("step") != "notify"]


def stored(builder: EvidenceBuilder, run_id: str, **options: float) -> RunRecord:
    builder.run(run_id, started_at=options.get("started_at"))
    return builder.store.load_run(run_id)


def scaled(run: RunRecord, flow: Flow, label: str = "1h=1s") -> RunRecord:
    """`run` as if it had run `flow` under a time scale, as the harness records it."""
    flow_scaled, record = TimeScale.parse(label).apply(flow)
    return replace(run, flow=replace(run.flow, definition=flow_to_dict(flow_scaled)),
                   options=replace(run.options, time_scale=record))


def test_a_run_of_the_flow_as_written_ran_it_and_one_of_an_older_definition_did_not(
        builder: EvidenceBuilder, flow: Flow) -> None:
    current = stored(builder, "new001")
    without_notify(builder)
    older = stored(builder, "old001")

    assert ran(current, flow)
    assert not ran(older, flow)
    assert change(older, flow) == ("nodes: create_record, request_approval, approval, activate"
                                   " -> create_record, request_approval, approval, activate, "
                                   "notify")


def test_a_run_under_a_time_scale_ran_the_flow_it_scaled_and_gives_it_back_as_written(
        builder: EvidenceBuilder, flow: Flow) -> None:
    run = scaled(stored(builder, "new001"), flow)

    assert run.flow.definition != flow_to_dict(flow)  # its durations are the scaled ones
    assert ran(run, flow)
    assert flow_to_dict(as_written(run)) == flow_to_dict(flow)
    assert not ran(run, replace(flow, nodes=flow.nodes[:-1]))


def test_runs_are_sorted_by_definition_the_current_first_then_the_newest_older_one(
        builder: EvidenceBuilder, flow: Flow) -> None:
    new = stored(builder, "new001", started_at=30.0)
    without_notify(builder)
    old = stored(builder, "old001", started_at=20.0)
    old_scaled = scaled(stored(builder, "old002", started_at=21.0), as_written(old))
    next(n for n in builder.definition["nodes"] if n.get("step") == "activate")["timeout"] = 30
    oldest = stored(builder, "old003", started_at=10.0)

    found = by_definition([oldest, old, old_scaled, new], flow)

    assert [(d.label, d.runs) for d in found] == [
        ("current definition", ("new001",)),
        ("older definition 1", ("old001", "old002")),  # one definition, at two time scales
        ("older definition 2", ("old003",))]
    assert "notify" in found[1].change
    assert by_definition([oldest], flow)[0].runs == ()  # the current one, even with no run


def test_the_flow_as_it_is_is_the_spikes_file_else_the_newest_runs_definition(
        builder: EvidenceBuilder, tmp_path: Path, flow: Flow) -> None:
    spikes = tmp_path / "project" / "spikes"
    spikes.mkdir(parents=True)
    shutil.copy(SAMPLE_FLOW, spikes / f"{FLOW}.toml")
    original = copy.deepcopy(builder.definition)
    without_notify(builder)
    old = stored(builder, "old001", started_at=20.0)
    builder.definition = original
    new = stored(builder, "new001", started_at=10.0)  # ran before old001, as written now

    found = current_definition(FLOW, [old, new], spikes_dir=spikes,
                               project_dir=spikes.parent)

    assert (found.loaded, found.where) == (True, f"spikes/{FLOW}.toml")
    assert flow_to_dict(found.flow) == flow_to_dict(flow)

    (spikes / f"{FLOW}.toml").unlink()
    gone = current_definition(FLOW, [old, new], spikes_dir=spikes, project_dir=spikes.parent)

    assert (gone.loaded, gone.where) == (False, "run old001")
    assert "does not exist" in gone.why
    assert "no longer loads" in gone.describe()
    assert ran(old, gone.flow)
    assert not ran(new, gone.flow)


def test_an_older_definition_this_graduate_cannot_read_is_still_told_apart(
        builder: EvidenceBuilder, flow: Flow) -> None:
    new = stored(builder, "new001")
    builder.definition["flow"]["approval_class"] = "Z9"  # no longer a class
    unreadable = [stored(builder, "old001"), stored(builder, "old002")]
    with pytest.raises(GraduateError):
        as_written(unreadable[0])

    found = by_definition([*unreadable, new], flow)

    assert [(d.label, d.runs) for d in found] == [
        ("current definition", ("new001",)), ("older definition 1", ("old001", "old002"))]
    assert found[1].change == "flow.approval_class: 'Z9' -> 'A2'"


def test_with_the_file_gone_the_newest_run_says_which_definition_even_a_shortened_one(
        builder: EvidenceBuilder, flow: Flow) -> None:
    original = copy.deepcopy(builder.definition)
    without_notify(builder)
    old = stored(builder, "old001", started_at=20.0)
    builder.definition = original
    new = stored(builder, "new001", started_at=10.0)
    # The newest run of all shortened its waits (a wait-timeout run) of the flow as written
    # now: its definition is the newest, read from new001, which kept the deadlines.
    shortened = stored(builder, "new002", started_at=30.0)
    definition = copy.deepcopy(shortened.flow.definition)
    next(n for n in definition["nodes"] if n.get("wait"))["deadline"] = 5.0
    shortened = replace(shortened, flow=replace(shortened.flow, definition=definition),
                        options=replace(shortened.options, wait_deadline=5.0))

    found = current_definition(FLOW, [old, new, shortened])

    assert (found.loaded, found.where) == (False, "run new001")
    assert flow_to_dict(found.flow) == flow_to_dict(flow)
    assert [d.runs for d in by_definition([old, new, shortened], found.flow)] == [
        ("new001", "new002"), ("old001",)]
