"""The Temporal workflow sends its memo once per workflow task (MEMO_ONCE_PER_TASK):
histories recorded before, with one upsert per change, still replay on the code (the
SDK's replayer, no server). Recorded from a kill-worker+restart run of the scale bench's
generated 4-step flow: one instance undisturbed, one whose workflow task timed out."""

from __future__ import annotations

import asyncio
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
