"""SIGKILL to the pool child running the step; the worker's main process lives on."""

from __future__ import annotations

from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultPlan, kill_worker
from graduate.runs.timeline import EventKind

NAME = "kill-pool-child"
SKIPPED = EventKind("fault-skipped", "fault skipped", "stop")


class KillPoolChild(Fault):
    name = NAME
    description = ("SIGKILL to the process running the step; the worker's main process "
                   "lives on")
    events = (FAULT_FIRED, SKIPPED)

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if not engine.capabilities.pool_children:
            return (f"the {engine.product} worker runs steps in threads of its own process: "
                    f"there is no pool child to kill (see {kill_worker.NAME})")
        return None

    def fire(self, context: FaultContext) -> None:
        reached, workers = context.reached, context.session.workers
        victim = workers.holding(reached)
        at = None if reached is None else workers.kill_child(victim, reached.pid)
        if reached is None or at is None:
            context.timeline.add(SKIPPED, "no pool child holds the step: the worker runs it "
                                          "in its main process")
            return
        context.timeline.add(FAULT_FIRED, f"SIGKILL to pool child {reached.pid} of "
                                          f"{victim.name}; the worker's main process lives on",
                             at=at)


FAULT = KillPoolChild()
