"""SIGKILL to the worker holding the step: the whole process group, then a new worker."""

from __future__ import annotations

from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext
from graduate.runs.supervisor import WORKER_STARTED

NAME = "kill-worker"


class KillWorker(Fault):
    name = NAME
    description = "SIGKILL to a worker's whole process group, then a new worker"
    events = (FAULT_FIRED, WORKER_STARTED)

    def fire(self, context: FaultContext) -> None:
        workers = context.session.workers
        victim = workers.holding(context.reached)
        at = workers.kill(victim)
        context.timeline.add(FAULT_FIRED, f"SIGKILL to {victim.name} (process group "
                                          f"{victim.group})", at=at)
        context.release()
        workers.replace(victim, context.plan.restart_delay)


FAULT = KillWorker()
