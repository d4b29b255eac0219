"""Replay recorded workflow histories against the workflow code about to be deployed.

The SDK's `Replayer` runs the current code over each history, as a worker would after a
deploy; a command that no longer matches the history is a non-determinism error, the
same one that would stop the instance in production.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

from google.protobuf.json_format import ParseError
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from graduate.adapters.temporal import registry
from graduate.adapters.temporal.application import load_worker
from graduate.adapters.temporal.client import connect
from graduate.adapters.temporal.history_check import check_history
from graduate.adapters.temporal.messages import WORKFLOW_NAME
from graduate.adapters.temporal.workflow import GraduateFlow
from graduate.errors import ConfigError, ServiceError
from graduate.flow import Flow
from graduate.migrate.replay import Replayed
from graduate.services.model import TemporalTarget

# What SDK core's non-determinism errors say: the event by its ID ("event 7") or, for
# an activity that is no longer scheduled where it was, by its type ("Activity type of
# scheduled event 'crm.create_record' does not match ..."), inside a failure's message.
_EVENT_ID = re.compile(r"HistoryEvent\(id: (\d+)|\bevent(?:[ _]id)?[:= ]*(\d+)",
                       re.IGNORECASE)
_SCHEDULED = re.compile(r"scheduled event '([^']+)'")
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


def export_history(history_json: str, folder: Path, workflow_id: str) -> Path:
    """Write one workflow's history as the Temporal CLI and UI export it, named after the
    workflow ID (which a history file does not hold)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{workflow_id}.json"
    path.write_text(history_json, encoding="utf-8")
    return path


def read_history_files(paths: Sequence[Path], *,
                       own_flow: bool = True) -> list[WorkflowHistory]:
    """Histories from JSON files (`temporal workflow show --output json`, the UI's
    download, or a run's export): the workflow ID is the file's name. With `own_flow`,
    each must be a history of graduate's workflow (a team's app may have removed a
    workflow type, which its replay then shows breaking)."""
    histories = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            history = WorkflowHistory.from_json(path.stem, json.loads(text))
            # SDK core panics in a thread and the replay never ends without it.
            if not history.run_id:
                raise ValueError("its first event names no run: originalExecutionRunId")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read history file {path}: {error}") from error
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError,
                ParseError) as error:
            raise ConfigError(f"{path} is not a Temporal workflow history in JSON ({error}); "
                              "export one with `temporal workflow show --workflow-id ID "
                              "--output json`") from error
        check_history(history, str(path), WORKFLOW_NAME if own_flow else None)
        histories.append(history)
    return histories


async def fetch_histories(target: TemporalTarget, query: str) -> list[WorkflowHistory]:
    """The histories of the workflows a visibility query lists (in flight by default)."""
    client: Client = await connect(target)
    histories = []
    try:
        async for execution in client.list_workflows(query):
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            histories.append(await handle.fetch_history())
    except Exception as error:
        if isinstance(error, ServiceError):
            raise
        raise ConfigError(f"the visibility query {query!r} failed: {error}") from error
    return histories


def workflows_for(flow: Flow, previous: Flow | None = None,
                  app: Mapping[str, str] | None = None) -> list[type]:
    """The workflow classes a worker would run: graduate's interpreter with `flow` as its
    code (and `previous` kept by its versioning guard), or a team app's own."""
    if app is not None:
        return list(load_worker(app["worker"], "the app's temporal worker").workflows)
    registry.register(flow, previous)
    return [GraduateFlow]


async def replay(histories: Sequence[WorkflowHistory], workflows: Sequence[type],
                 on_result: Callable[[Replayed], None] | None = None) -> list[Replayed]:
    """Each history replayed on `workflows`: clean, or where and why it breaks; each
    result also to `on_result` as it comes."""
    replayer = Replayer(
        workflows=workflows,
        # As the worker runs them: graduate's modules pass through the sandbox.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("graduate")),
    )

    # A history whose workflow never started a task ran no code: it replays on any code,
    # and SDK core, handed it, waits for a task that never comes.
    results = [Replayed(h.workflow_id, h.run_id, running=True) for h in histories
               if not _ran(h)]
    if on_result is not None:
        for idle in results:
            on_result(idle)

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            if _ran(history):
                yield history

    async with replayer.workflow_replay_iterator(each()) as replayed:
        async for result in replayed:
            history, failure = result.history, result.replay_failure
            running = not any(e.event_type in _CLOSED for e in history.events)
            if failure is None:
                results.append(Replayed(history.workflow_id, history.run_id, running))
            else:
                message = str(failure).strip() or type(failure).__name__
                inner = _MESSAGE.search(message)
                reason = inner.group(1) if inner else message.splitlines()[0]
                results.append(Replayed(history.workflow_id, history.run_id, running,
                                        broken=True, event_id=_event_id(message, history),
                                        reason=reason[:500]))
            if on_result is not None:
                on_result(results[-1])
    return results


def _ran(history: WorkflowHistory) -> bool:
    return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
               for e in history.events)


_CLOSED = {EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
           EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
           EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
           EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
           EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
           EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW}


def _event_id(message: str, history: WorkflowHistory) -> int | None:
    """The history event the replay could not match, as the error names it."""
    if match := _EVENT_ID.search(message):
        event_id = int(match.group(1) or match.group(2))
        if any(e.event_id == event_id for e in history.events):
            return event_id
    if match := _SCHEDULED.search(message):
        return next((e.event_id for e in history.events
                     if e.HasField("activity_task_scheduled_event_attributes")
                     and e.activity_task_scheduled_event_attributes.activity_type.name
                     == match.group(1)), None)
    return None
