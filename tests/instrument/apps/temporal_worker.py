"""A team's Temporal worker for the order flow, with its side effects instrumented.

Run as `python -m tests.instrument.apps.temporal_worker READY_FILE` with TEMPORAL_ADDRESS
and ORDERS_TASK_QUEUE in the environment. Only the interceptor is graduate's: the
harness adds it to the workers it builds, and so does this module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import graduate.instrument as graduate
    from graduate.adapters.temporal.instrument import CorrelationInterceptor
    from graduate.apps import TemporalWorker
    from graduate.flow import InstanceRequest
    from graduate.instrument import Correlation, propagating

TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=4)


@dataclass(frozen=True)
class Order:
    order_id: str
    fail_times: int = 0


@graduate.effect("stock.reserve", key=lambda order: f"{order.order_id}:reserve")
def reserve_stock(order: Order) -> None:
    """The stock service's client call, instrumented in its decorator form."""


@activity.defn
def reserve(order: Order) -> str:
    reserve_stock(order)
    return order.order_id


@activity.defn
def charge(order: Order) -> str:
    with graduate.effect("payments.charge", key=f"{order.order_id}:charge"):
        if activity.info().attempt <= order.fail_times:
            raise RuntimeError("payment gateway timed out")
    return order.order_id


@activity.defn
async def confirm(order: Order) -> str:
    async with graduate.effect("mail.send", key=f"{order.order_id}:confirm"):
        await asyncio.sleep(0)
    return order.order_id


@workflow.defn
class OrderWorkflow:
    @workflow.run
    async def run(self, order: Order) -> str:
        for step in (reserve, charge, confirm):
            await workflow.execute_activity(step, order, start_to_close_timeout=TIMEOUT,
                                            retry_policy=RETRY)
        return order.order_id


def create_worker() -> TemporalWorker:
    """The worker factory the app's declaration names."""
    return TemporalWorker(task_queue=os.environ.get("ORDERS_TASK_QUEUE", "orders"),
                          workflows=[OrderWorkflow], activities=[reserve, charge, confirm])


async def start(client: Client, request: InstanceRequest) -> None:
    """The start function the app's declaration names: one order per instance."""
    await client.start_workflow(OrderWorkflow.run, Order(request.instance_id),
                                id=request.instance_id, task_queue=create_worker().task_queue)


async def start_order(address: str, task_queue: str, correlation: Correlation,
                      order: Order) -> str:
    """Start one order under `correlation`, as the harness's start function would, and
    wait for its result."""
    client = await Client.connect(address, interceptors=[CorrelationInterceptor()])
    with propagating(correlation):
        handle = await client.start_workflow(OrderWorkflow.run, order,
                                             id=correlation.instance_id,
                                             task_queue=task_queue)
    result: str = await handle.result()
    return result


async def start_untraced_order(address: str, task_queue: str, order: Order) -> str:
    """Start one order from a client without graduate's interceptor: the workflow runs,
    but graduate's correlation never reaches it (a stripped header)."""
    client = await Client.connect(address)
    result: str = await client.execute_workflow(OrderWorkflow.run, order, id=order.order_id,
                                                task_queue=task_queue)
    return result


async def serve(ready_file: Path) -> None:
    client = await Client.connect(os.environ["TEMPORAL_ADDRESS"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    parts = create_worker()
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = Worker(client, task_queue=parts.task_queue, workflows=parts.workflows,
                        activities=parts.activities, activity_executor=executor,
                        interceptors=[CorrelationInterceptor()])
        async with worker:
            ready_file.write_text(str(os.getpid()))
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
