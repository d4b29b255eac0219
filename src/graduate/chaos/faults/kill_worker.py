"""SIGKILL to the worker holding the step: the whole process group, then a new worker.
With `+restart`, the broker (or the Temporal server) dies with it and is started again
before the new worker: a host lost with everything on it."""

from __future__ import annotations

from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import (
    FAULT_FIRED,
    Fault,
    FaultContext,
    FaultOption,
    FaultPlan,
    Restarts,
)
from graduate.chaos.faults._restart import SERVICE_RESTARTED, restart
from graduate.runs.supervisor import WORKER_STARTED

NAME = "kill-worker"
RESTART = FaultOption("restart", False,
                      "also kill the broker (Celery) or the Temporal server just after the "
                      "worker, and start it again on its data before the new worker",
                      sentence="and the broker or Temporal server killed and restarted "
                               "with it")


class KillWorker(Fault):
    name = NAME
    description = "SIGKILL to a worker's whole process group, then a new worker"
    options = (RESTART,)
    events = (FAULT_FIRED, SERVICE_RESTARTED, WORKER_STARTED)

    def restarted(self, plan: FaultPlan, engine: EngineDescription) -> Restarts:
        if not plan.option(RESTART.name):
            return None
        return ("broker" if engine.capabilities.broker
                else "server" if engine.capabilities.server else None)

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if plan.option(RESTART.name) and self.restarted(plan, engine) is None:
            return f"{engine.product} has neither a broker nor a workflow server to restart"
        return None

    def variant(self, plan: FaultPlan) -> str:
        return " with the broker or server restarted" if plan.option(RESTART.name) else ""

    def fire(self, context: FaultContext) -> None:
        workers = context.session.workers
        victim = workers.holding(context.reached)
        at = workers.kill(victim)
        context.timeline.add(FAULT_FIRED, f"SIGKILL to {victim.name} (process group "
                                          f"{victim.group})", at=at)
        if context.plan.option(RESTART.name):
            stack = context.session.stack
            if context.session.engine.capabilities.broker:
                restart(context, stack.redis, "broker")
            else:
                restart(context, stack.temporal, "Temporal server")
        context.release()
        workers.replace(victim, context.plan.restart_delay)


FAULT = KillWorker()
