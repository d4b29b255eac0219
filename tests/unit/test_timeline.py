"""A run's timeline is in time order wherever it is kept or shown: an act added once it
is done, with the earlier moment it began (a worker counted from its spawn, a fleet's
events as its ledger recorded them), goes before the events added meanwhile; and a run
stored before, whose timeline holds such an event out of order, is reported in order."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.sample import sample_run_files

from graduate.chaos.faults import FAULT_FIRED
from graduate.evidence import EvidenceStore
from graduate.reports.build import build_report
from graduate.runs.record import RunRecord
from graduate.runs.supervisor import WORKER_STARTED
from graduate.runs.timeline import INSTANCES_STARTED, RUN_ENDED, Timeline, TimelineEvent


def test_an_event_added_with_an_earlier_time_goes_before_those_added_meanwhile() -> None:
    seen: list[str] = []
    timeline = Timeline(started=1000.0, listener=lambda e: seen.append(e.detail))
    timeline.add(INSTANCES_STARTED, "first", at=1001.0)
    timeline.add(FAULT_FIRED, "fired", at=1003.0)
    timeline.add(RUN_ENDED, "ended", at=1009.0)
    timeline.add(WORKER_STARTED, "spawned before the fault was seen fired", at=1002.5)
    timeline.add(WORKER_STARTED, "at the same time, added later", at=1003.0)

    assert [e.detail for e in timeline.events] == [
        "first", "spawned before the fault was seen fired", "fired",
        "at the same time, added later", "ended"]
    assert [e.at for e in timeline.events] == sorted(e.at for e in timeline.events)
    # Each is told to the listener as it is added.
    assert seen == ["first", "fired", "ended", "spawned before the fault was seen fired",
                    "at the same time, added later"]


def test_a_stored_timeline_out_of_order_is_reported_in_time_order(tmp_path: Path) -> None:
    record = RunRecord.from_dict(json.loads(
        sample_run_files()[0].read_text(encoding="utf-8")))
    events = list(record.timeline)
    assert len(events) >= 3
    late = TimelineEvent(at=events[0].at + 0.001, kind=WORKER_STARTED.kind,
                         detail="spawned early, added last")
    stored = dataclasses.replace(record, timeline=(*events, late))
    store = EvidenceStore(tmp_path / "evidence")
    store.save_run(stored)

    [run] = build_report(store, run_ids=[record.run_id]).runs

    times = [e.at for e in run.events]
    assert times == sorted(times)
    assert [e.detail for e in run.events][1] == "spawned early, added last"
    assert [e.number for e in run.events] == list(range(1, len(events) + 2))
