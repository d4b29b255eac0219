"""The Temporal workflow sends its memo once per workflow task (MEMO_ONCE_PER_TASK):
histories recorded before, with one upsert per change, still replay on the code (the
SDK's replayer, no server). Recorded from a kill-worker+restart run of the scale bench's
generated 4-step flow: one instance undisturbed, one whose workflow task timed out.
Executions started since the workflow's input says so record no patch marker; those
that recorded one replay with it. Executions started since the input also says
`memo_at_waits` change the memo only where a wait opens and closes (docs/adr/0014)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from graduate.adapters.temporal.replay import read_history_files, replay, workflows_for
from graduate.bench.scale import generated_flow

DATA = Path(__file__).parent / "data"
RECORDED = DATA / "histories-memo-per-change"


def test_histories_recorded_with_one_memo_upsert_per_change_still_replay(
        tmp_path: Path) -> None:
    flow = generated_flow(4, tmp_path)
    histories = read_history_files(sorted(RECORDED.glob("*.json")))
    assert len(histories) == 2

    replayed = asyncio.run(replay(histories, workflows_for(flow)))

    assert [r.describe() for r in replayed if r.broken] == []
    assert len(replayed) == 2


def test_a_history_recorded_with_the_memo_once_per_task_replays_with_four_upserts(
        tmp_path: Path) -> None:
    """Seven memo changes of the sample flow's shape (four steps done, the approval
    done, the wait opened and closed) reach the server in four upserts, one per workflow
    task that schedules the next step or waits."""
    flow = generated_flow(4, tmp_path)
    [path] = sorted((DATA / "histories-memo-per-task").glob("*.json"))
    text = path.read_text(encoding="utf-8")
    assert text.count('"EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED"') == 4

    replayed = asyncio.run(replay(read_history_files([path]), workflows_for(flow)))

    assert [r.broken for r in replayed] == [False]


def test_a_history_whose_input_asks_the_memo_once_per_task_records_no_patch_marker(
        tmp_path: Path) -> None:
    """FlowInput.memo_once_per_task, set at every start, spares each instance the patch
    marker and the search attribute upsert the SDK records with it: two events fewer, and
    still four memo upserts."""
    flow = generated_flow(4, tmp_path)
    [path] = sorted((DATA / "histories-memo-in-input").glob("*.json"))
    text = path.read_text(encoding="utf-8")
    assert '"memo_once_per_task": true' in _input_of(text)
    assert text.count('"EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED"') == 4
    assert '"EVENT_TYPE_MARKER_RECORDED"' not in text
    assert '"EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"' not in text

    replayed = asyncio.run(replay(read_history_files([path]), workflows_for(flow)))

    assert [r.broken for r in replayed] == [False]


def test_a_history_whose_input_asks_the_memo_at_waits_upserts_it_twice_and_replays(
        tmp_path: Path) -> None:
    """FlowInput.memo_at_waits: the memo changes where the approval wait opens (the wait,
    and the two steps passed before it) and where it closes, not at every step; the
    histories recorded before it (above) replay as they were recorded."""
    flow = generated_flow(4, tmp_path)
    [path] = sorted((DATA / "histories-memo-at-waits").glob("*.json"))
    text = path.read_text(encoding="utf-8")
    assert '"memo_at_waits": true' in _input_of(text)
    assert _memo_changes(text) == [
        {"waiting": "approval", "done": ["create_record", "request_approval"]},
        {"waiting": None}]

    replayed = asyncio.run(replay(read_history_files([path]), workflows_for(flow)))

    assert [r.broken for r in replayed] == [False]


def _memo_changes(history_json: str) -> list[dict[str, object]]:
    """Each memo upsert of a history, its fields decoded, oldest first."""
    changes = []
    for event in json.loads(history_json)["events"]:
        modified = event.get("workflowPropertiesModifiedEventAttributes")
        if modified is not None:
            fields = modified["upsertedMemo"]["fields"]
            changes.append({name: json.loads(base64.b64decode(value.get("data", "")) or "null")
                            for name, value in fields.items()})
    return changes


def _input_of(history_json: str) -> str:
    """The workflow's input as JSON text (the first event's first payload)."""
    started = json.loads(history_json)["events"][0]
    payload = started["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    return json.dumps(json.loads(base64.b64decode(payload["data"])))
