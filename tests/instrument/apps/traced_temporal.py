"""A team's Temporal app that traces with OpenTelemetry: temporalio.contrib.opentelemetry's
TracingInterceptor on its worker and its client, an SDK tracer provider in the worker.

Its one activity refuses to run outside a span, so the effect it records can only carry
the trace the interceptor carried to it.
"""

from __future__ import annotations

import os
from datetime import timedelta

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

with workflow.unsafe.imports_passed_through():
    import graduate
    from graduate.apps import TemporalWorker
    from graduate.flow import InstanceRequest


@activity.defn
def reserve(order_id: str) -> None:
    if not trace.get_current_span().get_span_context().is_valid:
        raise RuntimeError("the activity runs outside any span: the trace did not arrive")
    with graduate.effect("stock.reserve", key=f"{order_id}:reserve"):
        pass


@workflow.defn
class TracedOrder:
    @workflow.run
    async def run(self, order_id: str) -> None:
        await workflow.execute_activity(reserve, order_id,
                                        start_to_close_timeout=timedelta(seconds=10))


def create_worker() -> TemporalWorker:
    """The declared factory: the app's own tracing interceptor goes with its worker."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    return TemporalWorker(task_queue=os.environ["ORDERS_TASK_QUEUE"], workflows=[TracedOrder],
                          activities=[reserve], interceptors=[TracingInterceptor()])


async def start(client: Client, request: InstanceRequest) -> None:
    await client.start_workflow(TracedOrder.run, request.instance_id, id=request.instance_id,
                                task_queue=os.environ["ORDERS_TASK_QUEUE"])
