"""The scaffolded workflow's parallel group on a real Temporal dev server, its activities
replaced by the test's own (as a team tests its workflow code): a branch that fails for
good halts the others, which start no further step while their step in flight finishes,
and everything that applied, in every branch and before the group, is compensated in
reverse order of completion, once each; an operator's cancellation in the middle of the
group does the same, and a step in flight when it comes finishes and is undone. The
contract flow `branches`: create_record, then the branches portal (open_portal,
grant_access), open_account and welcome, then activate."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import typing
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from graduate.flow import load_flow
from graduate.migrate.scaffold import scaffold
from graduate.services.model import TemporalTarget
from tests.conftest import FlowFactory

pytestmark = pytest.mark.slow
DEADLINE = 60.0
EFFECTS = {"create_record": "crm.create_record", "open_portal": "portal.open",
           "grant_access": "portal.grant", "open_account": "billing.open_account",
           "welcome": "notify.welcome", "activate": "crm.activate"}
COMPENSATIONS = {"create_record": "crm.void_record", "open_portal": "portal.close",
                 "grant_access": "portal.revoke", "open_account": "billing.close_account"}


@pytest.fixture(autouse=True)
def _deterministic(recwarn: pytest.WarningsRecorder) -> Iterator[None]:
    """The generated workflow uses only what Temporal's sandbox calls deterministic."""
    yield
    assert not [str(w.message) for w in recwarn if "non-deterministic" in str(w.message)]


class Scaffolded:
    """The generated workflow, imported, and the calls the test's activities received."""

    def __init__(self, module: Any) -> None:
        self.workflow = getattr(module, module.WORKFLOW_NAME)
        self.input = typing.get_type_hints(self.workflow.run)["request"]
        self.calls: list[str] = []  # the effect (or compensation) names, as called


@pytest.fixture
def generated(flow_file: FlowFactory, tmp_path: Path) -> Iterator[Scaffolded]:
    done = scaffold(load_flow(flow_file("branches")), tmp_path / "package")
    sys.path.insert(0, str(done.out))
    try:
        yield Scaffolded(importlib.import_module(f"{done.package}.workflow"))
    finally:
        sys.path.remove(str(done.out))
        for name in [m for m in sys.modules if m.split(".")[0] == done.package]:
            del sys.modules[name]


Behaviour = Callable[[WorkflowHandle[Any, Any]], Awaitable[None]]


async def _run(temporal: TemporalTarget, generated: Scaffolded,
               behaviours: dict[str, Behaviour],
               operator: Behaviour | None = None) -> tuple[str | None, WorkflowFailureError | None]:
    """Run one instance with the test's activities (each records its call, then does what
    `behaviours` says for its step); its result, or the error it failed with."""
    client = await Client.connect(temporal.address)
    queue = f"branches-{uuid.uuid4().hex[:8]}"
    instance = f"instance-{uuid.uuid4().hex[:8]}"

    def fake(name: str) -> Callable[..., Awaitable[None]]:
        @activity.defn(name=name)
        async def call(effect: Any) -> None:
            generated.calls.append(name)
            behaviour = behaviours.get(name)
            if behaviour is not None:
                await behaviour(client.get_workflow_handle(instance))
        return call

    fakes = [fake(name) for table in (EFFECTS, COMPENSATIONS) for name in table.values()]
    async with Worker(client, task_queue=queue, workflows=[generated.workflow],
                      activities=fakes):
        handle = await client.start_workflow(
            generated.workflow.run,
            generated.input(tenant_id="t1", entity_id="e1", date="20260101",
                            instance_id=instance),
            id=instance, task_queue=queue)
        if operator is not None:
            await operator(handle)
        try:
            return await asyncio.wait_for(handle.result(), DEADLINE), None
        except WorkflowFailureError as error:
            return None, error


async def _processed(handle: WorkflowHandle[Any, Any], event: EventType.ValueType) -> None:
    """Until the workflow has run a workflow task after `event` (it has seen it)."""
    until = time.monotonic() + DEADLINE
    while time.monotonic() < until:
        kinds = [e.event_type for e in (await handle.fetch_history()).events]
        if event in kinds and (EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                               in kinds[kinds.index(event):]):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the workflow never processed {EventType.Name(event)}")


async def _refuse(handle: WorkflowHandle[Any, Any]) -> None:
    raise ApplicationError("the billing system refused the account", non_retryable=True)


async def test_a_branch_failing_for_good_halts_the_others_and_undoes_all_in_reverse(
        temporal_server: TemporalTarget, generated: Scaffolded) -> None:
    async def open_after_the_failure(handle: WorkflowHandle[Any, Any]) -> None:
        # In flight while open_account fails: it finishes, and grant_access never starts.
        await _processed(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)

    result, error = await _run(temporal_server, generated, {
        "billing.open_account": _refuse, "portal.open": open_after_the_failure})

    assert result is None
    assert isinstance(error, WorkflowFailureError)  # it failed visibly, with the step's cause
    assert "refused the account" in str(error.cause.__cause__)
    effects, undone = _split(generated.calls)
    assert effects[0] == "crm.create_record"
    assert sorted(effects[1:]) == ["billing.open_account", "notify.welcome", "portal.open"]
    # The portal opened last: closed first; the record, before the group, last; the
    # failed account and the welcome (no compensation) are not undone.
    assert undone == ["portal.close", "crm.void_record"]


async def test_a_cancellation_in_the_group_lets_steps_in_flight_finish_and_undoes_them(
        temporal_server: TemporalTarget, generated: Scaffolded) -> None:
    async def open_after_the_cancellation(handle: WorkflowHandle[Any, Any]) -> None:
        await _processed(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)

    result, error = await _run(temporal_server, generated,
                               {"portal.open": open_after_the_cancellation},
                               operator=_cancel_once("portal.open", generated))

    assert error is None
    assert result == "cancelled: compensated"
    effects, undone = _split(generated.calls)
    assert sorted(effects[1:]) == ["billing.open_account", "notify.welcome", "portal.open"]
    assert undone[0] == "portal.close"  # it finished after the cancellation: undone first
    assert sorted(undone) == ["billing.close_account", "crm.void_record", "portal.close"]
    assert undone[-1] == "crm.void_record"


async def test_a_step_in_flight_when_cancelled_finishes_and_is_undone(
        temporal_server: TemporalTarget, generated: Scaffolded) -> None:
    async def create_after_the_cancellation(handle: WorkflowHandle[Any, Any]) -> None:
        await _processed(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)

    result, error = await _run(temporal_server, generated,
                               {"crm.create_record": create_after_the_cancellation},
                               operator=_cancel_once("crm.create_record", generated))

    assert error is None
    assert result == "cancelled: compensated"
    assert generated.calls == ["crm.create_record", "crm.void_record"]


def _cancel_once(effect: str, generated: Scaffolded) -> Behaviour:
    """An operator who cancels the instance once `effect` is called."""
    async def cancel(handle: WorkflowHandle[Any, Any]) -> None:
        until = time.monotonic() + DEADLINE
        while effect not in generated.calls:
            assert time.monotonic() < until, f"{effect} never started"
            await asyncio.sleep(0.05)
        await handle.cancel()

    return cancel


def _split(calls: list[str]) -> tuple[list[str], list[str]]:
    compensations = set(COMPENSATIONS.values())
    effects = [c for c in calls if c not in compensations]
    undone = [c for c in calls if c in compensations]
    assert len(undone) == len(set(undone)), f"a compensation ran twice: {calls}"
    assert calls == effects + undone, f"a step ran after the compensation began: {calls}"
    return effects, undone
