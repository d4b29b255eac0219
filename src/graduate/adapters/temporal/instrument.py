"""Temporal's context for `graduate.effect`: the instance and attempt of an activity, and
graduate's correlation carried from the client through the workflow to its activities.

The instance is the workflow ID and the attempt the activity's, from `activity.info()`:
Temporal's own record, needing nothing from the application. The correlation and
graduate's trace ID travel as a Temporal header, set by `CorrelationInterceptor` on the
client that starts an instance (inside `graduate.instrument.propagating`) and copied by
the same interceptor on the worker from the workflow to each activity, child workflow
and continue-as-new: the harness adds it to the client and worker it builds.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Mapping
from typing import Any

from temporalio import activity, client, converter, worker, workflow
from temporalio.api.common.v1 import Payload

from graduate.instrument import Correlation, EngineCall, propagated, propagating

ENGINE_NAME = "temporal"
HEADER = "graduate-correlation"


def current() -> EngineCall | None:
    """The activity this code runs in, if any (the context provider of this adapter)."""
    if not activity.in_activity():
        return None
    info = activity.info()
    heartbeat = activity.heartbeat
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # An async activity heartbeats on its event loop, in its own context; a paused
        # effect waits in another thread, so it asks the loop to heartbeat for it.
        context = contextvars.copy_context()

        def heartbeat() -> None:
            loop.call_soon_threadsafe(context.run, activity.heartbeat)

    return EngineCall(engine=ENGINE_NAME, instance_id=info.workflow_id or "",
                      attempt=info.attempt, execution_id=info.activity_id,
                      heartbeat=heartbeat)


def _to_header(headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
    correlation = propagated()
    if correlation is None or HEADER in headers:
        return headers
    payload = converter.PayloadConverter.default.to_payloads([correlation.to_header()])[0]
    return {**headers, HEADER: payload}


def _from_header(headers: Mapping[str, Payload]) -> Correlation | None:
    payload = headers.get(HEADER)
    if payload is None:
        return None
    [value] = converter.PayloadConverter.default.from_payloads([payload])
    return Correlation.from_header(value)


class CorrelationInterceptor(client.Interceptor, worker.Interceptor):
    """Carries graduate's correlation header from client to workflow to activities."""

    def intercept_client(self, next: client.OutboundInterceptor) -> client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
            self, next: worker.ActivityInboundInterceptor) -> worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
            self, input: worker.WorkflowInterceptorClassInput,
    ) -> type[worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(client.OutboundInterceptor):
    async def start_workflow(
            self, input: client.StartWorkflowInput) -> client.WorkflowHandle[Any, Any]:
        input.headers = _to_header(input.headers)
        return await super().start_workflow(input)


class _ActivityInbound(worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: worker.ExecuteActivityInput) -> Any:
        correlation = _from_header(input.headers)
        if correlation is None:
            return await super().execute_activity(input)
        with propagating(correlation):
            return await super().execute_activity(input)


class _WorkflowInbound(worker.WorkflowInboundInterceptor):
    """Keeps the workflow's header as it came (no decoding in workflow code) and puts it
    on everything the workflow starts."""

    header: Payload | None = None

    def init(self, outbound: worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: worker.ExecuteWorkflowInput) -> Any:
        self.header = input.headers.get(HEADER)
        return await super().execute_workflow(input)


class _WorkflowOutbound(worker.WorkflowOutboundInterceptor):
    def __init__(self, next: worker.WorkflowOutboundInterceptor,
                 inbound: _WorkflowInbound) -> None:
        super().__init__(next)
        self._inbound = inbound

    def _carry(self, headers: Mapping[str, Payload]) -> Mapping[str, Payload]:
        header = self._inbound.header
        return headers if header is None else {**headers, HEADER: header}

    def start_activity(self, input: worker.StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = self._carry(input.headers)
        return super().start_activity(input)

    def start_local_activity(
            self, input: worker.StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = self._carry(input.headers)
        return super().start_local_activity(input)

    async def start_child_workflow(
            self, input: worker.StartChildWorkflowInput) -> workflow.ChildWorkflowHandle[Any, Any]:
        input.headers = self._carry(input.headers)
        return await super().start_child_workflow(input)

    def continue_as_new(self, input: worker.ContinueAsNewInput) -> Any:
        input.headers = self._carry(input.headers)
        return super().continue_as_new(input)
