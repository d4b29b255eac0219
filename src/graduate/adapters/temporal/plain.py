"""The flow written directly with the Temporal SDK: a workflow that runs one activity per
step and waits on a signal per wait until the wait's deadline, with nothing of graduate's
in between (no memo, no ledger, no fault points). The baseline of `graduate bench` (see
`graduate.adapters.plain`).

    python -m graduate.adapters.temporal.plain RUN_DIR   (a PlainSpec on standard input)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from graduate.adapters.base import write_ready_file
    from graduate.adapters.plain import PlainSpec, record_effect, start_plain_worker
    from graduate.adapters.temporal.client import connect
    from graduate.adapters.temporal.worker import ACTIVITY_THREADS
    from graduate.processes import ManagedProcess
    from graduate.services.model import TemporalTarget

T = TypeVar("T")


@dataclass(frozen=True)
class PlainInput:
    instance_id: str
    nodes: list[list[str]]
    database: str
    deadlines: dict[str, float] = field(default_factory=dict)  # seconds, by wait


@dataclass(frozen=True)
class PlainEffect:
    instance_id: str
    step: str
    database: str


@activity.defn(name="plain_effect")
def plain_effect(effect: PlainEffect) -> None:
    record_effect(effect.database, effect.instance_id, effect.step)


@workflow.defn(name="PlainFlow")
class PlainFlow:
    def __init__(self) -> None:
        self._approved: set[str] = set()

    @workflow.run
    async def run(self, flow_input: PlainInput) -> None:
        for kind, name in flow_input.nodes:
            if kind == "step":
                await workflow.execute_activity(
                    plain_effect, PlainEffect(flow_input.instance_id, name, flow_input.database),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=5))
            else:
                await self._approval(name, flow_input.deadlines.get(name))

    async def _approval(self, wait: str, deadline: float | None) -> None:
        """The approval, or its deadline: the wait as a team writes it (a durable timer
        that the signal cancels, as graduate's wait has). The bench answers every wait,
        so no deadline passes; one that did would fail the instance."""
        try:
            await workflow.wait_condition(
                lambda: wait in self._approved,
                timeout=timedelta(seconds=deadline) if deadline is not None else None)
        except TimeoutError:
            raise ApplicationError(f"no decision on {wait} before its deadline",
                                   non_retryable=True) from None

    @workflow.signal(name="approve")
    def approve(self, wait: str) -> None:
        self._approved.add(wait)


def start_worker(spec: PlainSpec, run_dir: Path) -> ManagedProcess:
    return start_plain_worker(spec, run_dir, __name__, "Temporal")


class PlainTemporalClient:
    """Starts and signals plain workflows (`graduate.adapters.plain.PlainClient`)."""

    def __init__(self, spec: PlainSpec) -> None:
        self._spec = spec
        self._loop = asyncio.new_event_loop()
        self._client: Client = self._run(connect(TemporalTarget(**spec.services["temporal"])))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def start(self, instance_id: str) -> None:
        self._run(self._client.start_workflow(
            PlainFlow.run, PlainInput(instance_id, [list(n) for n in self._spec.nodes],
                                      self._spec.database, dict(self._spec.deadlines)),
            id=instance_id, task_queue=self._spec.queue))

    def signal(self, instance_id: str, wait: str) -> None:
        self._run(self._client.get_workflow_handle(instance_id).signal(PlainFlow.approve, wait))

    def close(self) -> None:
        self._loop.close()



def open_client(spec: PlainSpec) -> PlainTemporalClient:
    return PlainTemporalClient(spec)

async def serve(spec: PlainSpec) -> None:
    client = await connect(TemporalTarget(**spec.services["temporal"]))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The same activity threads as graduate's worker, so that only graduate differs.
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        worker = Worker(client, task_queue=spec.queue, workflows=[PlainFlow],
                        activities=[plain_effect], activity_executor=executor,
                        max_concurrent_activities=ACTIVITY_THREADS)
        async with worker:
            write_ready_file(spec.ready_file, os.getpid())
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(PlainSpec.from_json(sys.stdin.read())))
