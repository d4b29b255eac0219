"""The deterministic workflow that interprets a graduate flow.

Steps are activities named after their effect (so Temporal's history and UI read
`crm.create_record`, not a generic name), waits are signals with a deadline, timers
are durable timers, a parallel group's branches run as concurrent activities joined
before the flow goes on, and a permanent failure, a rejection, a passed deadline, a
cancellation (an operator's rollback) or the flow's interrupt compensates the completed
steps in reverse order. The interrupt is a signal like any other, recorded in the
history; the workflow looks for it before each step, timer and join and in every wait's
condition, so that a replay takes the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from graduate.adapters.temporal import registry
    from graduate.adapters.temporal.messages import (
        PERMANENT_ERROR_TYPE,
        WORKFLOW_NAME,
        EffectInput,
        FlowInput,
        FlowResult,
    )
    from graduate.flow import (
        Branch,
        Flow,
        Interrupt,
        Parallel,
        Step,
        Timer,
        Wait,
        WaitEnd,
        WhileOpen,
    )


def _retry_policy(step: Step) -> RetryPolicy:
    policy = step.retry
    return RetryPolicy(
        maximum_attempts=policy.max_attempts,
        initial_interval=timedelta(seconds=policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=timedelta(seconds=policy.maximum_interval),
        non_retryable_error_types=[PERMANENT_ERROR_TYPE],
    )


# The memo is sent once per workflow task, with the commands that end it, instead of once
# per change (seven upserts per instance of the sample flow become four). Executions
# started since say so in their input (FlowInput.memo_once_per_task). One whose input
# does not asks this patch marker, as executions did before the input said it: one
# recorded with the marker replays once per task, one recorded before the marker replays
# without it and keeps one upsert per change, so the histories each recorded still match.
# (The input, not the marker, for new executions: a marker costs every instance two
# events, the marker and the search attribute upsert the SDK adds with it.)
MEMO_ONCE_PER_TASK = "graduate-memo-once-per-task"
# Since FlowInput.memo_at_waits (docs/adr/0014), the memo says where an instance waits:
# it changes when a wait opens (the wait, and the nodes passed before it) and when it
# closes, two upserts per wait, where a change per node passed cost the sample flow five.
# What a running instance has done between waits is in the ledger and the history; the
# result of a finished one carries all it did. Executions started without the flag
# replay as they recorded: a memo change per node, once per task or not.


def _cancelled() -> str:
    reason = workflow.cancellation_reason()
    return f"cancelled by an operator{': ' + reason if reason else ''}"


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return str(cause) if cause is not None else str(error)


@workflow.defn(name=WORKFLOW_NAME)
class GraduateFlow:
    def __init__(self) -> None:
        self._signals: dict[str, dict[str, Any]] = {}
        self._done: list[str] = []
        self._sending: set[str] = set()  # reminders and escalations being sent
        self._memo: dict[str, Any] = {}  # memo changes not sent yet
        self._memo_per_task = False  # see MEMO_ONCE_PER_TASK
        self._memo_at_waits = False  # see FlowInput.memo_at_waits
        self._interrupt: Interrupt | None = None  # the flow's, set as it starts

    @workflow.run
    async def run(self, flow_input: FlowInput) -> FlowResult:
        self._memo_per_task = (flow_input.memo_once_per_task
                               or workflow.patched(MEMO_ONCE_PER_TASK))
        self._memo_at_waits = flow_input.memo_at_waits
        flow = registry.get(flow_input.flow)
        older = registry.previous(flow_input.flow)
        # The versioning guard: an execution started before this version was deployed
        # replays without the marker, so patched() is False and it keeps its version.
        if older is not None and not workflow.patched(f"graduate-{flow.name}-v{flow.version}"):
            flow = older
        # The instance's own flow (a `for_each` step as a branch per item): its input is
        # in the workflow's input, so a replay expands it the same way.
        flow = flow.for_instance(flow_input.request)
        try:
            return await self._interpret(flow, flow_input)
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is None:
                raise  # not the operator's cancellation (the worker evicting the workflow)
            # Temporal delivers a cancellation once: the compensations that follow run as
            # activities like any others, recorded in the history.
            return await self._compensate(flow, flow_input, _cancelled())

    async def _interpret(self, flow: Flow, flow_input: FlowInput) -> FlowResult:
        self._interrupt = flow.interrupt
        for node in flow.nodes:
            if self._interrupted():
                return await self._end_interrupted(flow, flow_input)
            if isinstance(node, Step):
                try:
                    await self._step(flow_input, node)
                except ActivityError as error:
                    return await self._compensate(
                        flow, flow_input, f"step {node.name} failed: {_cause(error)}")
            elif isinstance(node, Wait):
                ended = await self._wait(flow, flow_input, node)
                if ended is not None:
                    return ended
            elif isinstance(node, Timer):
                await self._timer(node)
            elif isinstance(node, Parallel):
                failure = await self._parallel(flow_input, node)
                if failure is not None:
                    return await self._compensate(flow, flow_input, failure)
            self._progress(node.name)
        if self._interrupted():  # during the last step: the instance had not finished
            return await self._end_interrupted(flow, flow_input)
        return FlowResult("completed", list(self._done))

    def _interrupted(self) -> bool:
        return self._interrupt is not None and self._interrupt.signal in self._signals

    async def _timer(self, timer: Timer) -> None:
        """A durable timer; with an interrupt declared, one that the interrupt ends early
        (a flow without one keeps the plain timer its histories recorded)."""
        self._send_memo()
        if self._interrupt is None:
            await workflow.sleep(timedelta(seconds=timer.duration))
            return
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(self._interrupted,
                                          timeout=timedelta(seconds=timer.duration))

    async def _end_interrupted(self, flow: Flow, flow_input: FlowInput) -> FlowResult:
        """The interrupt arrived: compensate every step that applied, then send its notice."""
        assert self._interrupt is not None
        return await self._compensate_then_notify(flow, flow_input, self._interrupt.reason,
                                                  self._interrupt.notice_step)

    async def _parallel(self, flow_input: FlowInput, group: Parallel) -> str | None:
        """Run the group's branches at once and join them; the first branch failure, or
        None. After a failure the other branches start no further step; their steps in
        flight finish (and count as done), so that every step that applied is compensated.
        An operator's cancellation halts them the same way before it reaches `run`."""
        failures: list[str] = []
        branches = [asyncio.create_task(self._branch(flow_input, branch, failures))
                    for branch in group.branches]
        # workflow.wait, not asyncio.wait: the same wait over a list, not a set, so that
        # nothing in it depends on hashing order (the commands it issues are the same).
        try:
            self._send_memo()
            await workflow.wait(branches)
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is not None:
                failures.append(_cancelled())
                await workflow.wait(branches)
            raise
        return failures[0] if failures else None

    async def _branch(self, flow_input: FlowInput, branch: Branch,
                      failures: list[str]) -> None:
        for step in branch.steps:
            if failures or self._interrupted():
                return
            try:
                await self._step(flow_input, step)
            except ActivityError as error:
                failures.append(f"step {step.name} failed: {_cause(error)}")
                return
            self._progress(step.name)

    async def _step(self, flow_input: FlowInput, step: Step) -> None:
        """Run the step's activity. A cancellation of the workflow does not cancel it: the
        step in flight finishes (its effect lands, or it fails), and only then does the
        cancellation reach `run`, which compensates what the step applied too."""
        activity = asyncio.create_task(self._activity(flow_input, step, "effect"))
        try:
            await workflow.wait([activity])
        except asyncio.CancelledError:
            if workflow.cancellation_reason() is not None:
                await workflow.wait([activity])
                if activity.exception() is None:
                    self._progress(step.name)
            raise
        activity.result()  # an ActivityError when the step failed

    async def _wait(self, flow: Flow, flow_input: FlowInput, wait: Wait) -> FlowResult | None:
        """None to go on; a result when the wait ends the flow."""
        if self._memo_at_waits:
            self._set_memo(waiting=wait.signal, done=list(self._done))
        else:
            self._set_memo(waiting=wait.signal)
        sends = [(send.step.name, asyncio.create_task(self._send_while_open(
            flow_input, wait, send))) for send in wait.while_open]
        try:
            self._send_memo()
            await workflow.wait_condition(
                lambda: wait.signal in self._signals or self._interrupted(),
                timeout=timedelta(seconds=wait.deadline))
        except TimeoutError:
            end: WaitEnd | None = "expired"
            action: str = wait.on_timeout
        else:
            if self._interrupted():
                end, action = None, "compensate"  # ended below, once the sends are
            elif self._signals[wait.signal].get("decision", "approve") != "reject":
                self._set_memo(waiting=None)
                return None
            else:
                end, action = "rejected", wait.on_reject
        finally:
            for name, send in sends:
                await self._end_send(name, send)
        self._set_memo(waiting=None)
        if end is None:
            return await self._end_interrupted(flow, flow_input)
        reason = wait.reason(end)
        if action == "continue":
            return None
        if action == "fail":
            return FlowResult("failed", list(self._done), reason)
        return await self._compensate_then_notify(flow, flow_input, reason,
                                                  wait.notice_step(end))

    async def _compensate_then_notify(self, flow: Flow, flow_input: FlowInput, reason: str,
                                      notice: Step | None) -> FlowResult:
        result = await self._compensate(flow, flow_input, reason)
        if notice is None or result.outcome != "compensated":
            return result
        return await self._notify(flow_input, notice, reason)

    async def _notify(self, flow_input: FlowInput, notice: Step, reason: str) -> FlowResult:
        """Send the notice of how the wait ended (or of the interrupt), once the
        compensations are done: the instance's last call. A notice that never lands
        fails the instance visibly."""
        try:
            await self._activity(flow_input, notice, "effect")
        except ActivityError as error:
            return FlowResult("failed", list(self._done),
                              f"{reason}; {notice.name} failed: {_cause(error)}")
        self._progress(notice.name)
        return FlowResult("compensated", list(self._done), reason)

    async def _send_while_open(self, flow_input: FlowInput, wait: Wait,
                               send: WhileOpen) -> None:
        """A durable timer racing the signal: at the reminder's (or the escalation's)
        time, if the wait is still open, send its effect once (its own activity, its own
        key). The wait stays open: only the signal or the deadline ends it."""
        await workflow.sleep(timedelta(seconds=send.after))
        if wait.signal in self._signals:
            return
        self._sending.add(send.step.name)
        # One that failed is seen in the ledger; the wait goes on.
        with contextlib.suppress(ActivityError):
            await self._activity(flow_input, send.step, "effect")

    async def _end_send(self, name: str, send: asyncio.Task[None]) -> None:
        """The wait ended: a reminder or escalation still waiting for its time is not
        sent; one being sent finishes (its effect lands or fails, it is not abandoned
        halfway)."""
        if send.done():
            return
        if name in self._sending:
            self._send_memo()
            await workflow.wait([send])
        else:
            send.cancel()
        self._sending.discard(name)

    async def _compensate(self, flow: Flow, flow_input: FlowInput, reason: str) -> FlowResult:
        for step in flow.compensations_for(self._done):
            try:
                await self._activity(flow_input, step, "compensation")
            except ActivityError as error:
                return FlowResult("failed", list(self._done),
                                  f"{reason}; compensation of {step.name} failed: "
                                  f"{_cause(error)}")
            self._progress(f"{step.name}.compensation")
        return FlowResult("compensated", list(self._done), reason)

    async def _activity(self, flow_input: FlowInput, step: Step, kind: str) -> None:
        effect = step.effect if kind == "effect" else step.compensation
        assert effect is not None
        heartbeat = flow_input.heartbeat_timeout
        self._send_memo()
        await workflow.execute_activity(
            effect,
            EffectInput(flow=flow_input.flow, request=flow_input.request, step=step.name,
                        kind=kind),
            start_to_close_timeout=timedelta(seconds=step.timeout),
            heartbeat_timeout=timedelta(seconds=heartbeat) if heartbeat else None,
            retry_policy=_retry_policy(step),
        )

    def _progress(self, node: str) -> None:
        # The memo lets `status` read progress from the server with no worker running:
        # with FlowInput.memo_at_waits, the progress as of the last wait (see `_wait`).
        self._done.append(node)
        if not self._memo_at_waits:
            self._set_memo(done=list(self._done))

    def _set_memo(self, **changes: Any) -> None:
        """Change the memo: at once as recorded before MEMO_ONCE_PER_TASK, else with
        the next `_send_memo`."""
        if not self._memo_per_task:
            workflow.upsert_memo(changes)
            return
        self._memo.update(changes)

    def _send_memo(self) -> None:
        """Send the memo's changes before the workflow awaits anything, so that they go
        with the commands of the workflow task that made them. (A finished workflow's
        result carries what it did: a change made last is not sent.)"""
        if self._memo:
            workflow.upsert_memo(self._memo)
            self._memo = {}

    @workflow.signal(dynamic=True)
    def on_signal(self, name: str, args: Sequence[RawValue]) -> None:
        payload: dict[str, Any] = {}
        if args:
            payload = workflow.payload_converter().from_payload(args[0].payload, dict)
        self._signals.setdefault(name, payload)
