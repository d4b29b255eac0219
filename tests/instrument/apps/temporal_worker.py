"""A team's Temporal app for the order flow, with its side effects instrumented.

graduate runs its worker from `create_worker` (the declared factory) and starts orders
with `start`. The task queue comes from ORDERS_TASK_QUEUE; ORDERS_CHARGE_FAILURES makes
the payment gateway time out on that many attempts, as a flaky gateway would.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import graduate
    from graduate.apps import TemporalWorker
    from graduate.flow import InstanceRequest

TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=4)


@dataclass(frozen=True)
class Order:
    order_id: str


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
        if activity.info().attempt <= int(os.environ.get("ORDERS_CHARGE_FAILURES", "0")):
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


async def start_untraced_order(address: str, task_queue: str, order: Order) -> str:
    """Start one order from a client without graduate's interceptor: the workflow runs,
    but graduate's correlation never reaches it (a stripped header)."""
    client = await Client.connect(address)
    result: str = await client.execute_workflow(OrderWorkflow.run, order, id=order.order_id,
                                                task_queue=task_queue)
    return result
