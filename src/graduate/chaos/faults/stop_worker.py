"""SIGTERM to the worker holding the step (a deploy or a scale-down), then a new worker.

With the `cold` option, SIGQUIT: Celery's cold shutdown, which does not wait for the task in
hand. Acknowledged early (Celery's default) that task is lost; acknowledged late, the
closing worker gives its message back to the broker at once (kombu's Redis transport
restores a closing channel's unacknowledged messages; AMQP does on the closed connection),
with no visibility timeout to wait for (tests/chaos/test_engine_documented.py).
"""

from __future__ import annotations

import signal

from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultOption, FaultPlan
from graduate.runs.supervisor import WORKER_EXITED, WORKER_FORCED, WORKER_STARTED

NAME = "stop-worker"
COLD = FaultOption("cold", False, "a cold shutdown (SIGQUIT: Celery does not wait for the "
                                  "task in hand; acknowledged late, it goes back to the "
                                  "broker) instead of a warm one (SIGTERM)",
                   sentence="as a cold shutdown (SIGQUIT: the task in hand is not waited "
                            "for)")


class StopWorker(Fault):
    name = NAME
    description = "SIGTERM to a worker (a deploy or a scale-down), then a new worker"
    options = (COLD,)
    events = (FAULT_FIRED, WORKER_EXITED, WORKER_FORCED, WORKER_STARTED)

    def variant(self, plan: FaultPlan) -> str:
        return " (cold shutdown)" if plan.option(COLD.name) else " (warm shutdown)"

    def fire(self, context: FaultContext) -> None:
        workers = context.session.workers
        cold = bool(context.plan.option(COLD.name))
        victim = workers.holding(context.reached)
        # A deploy signals the worker's main process. SIGTERM asks for a warm shutdown:
        # Celery finishes the task in hand, Temporal waits its graceful shutdown timeout.
        # SIGQUIT is Celery's cold shutdown: the task in hand is not waited for (lost when
        # acknowledged early, given back to the broker at once when acknowledged late).
        stop = signal.SIGQUIT if cold else signal.SIGTERM
        at = workers.stop(victim, cold=cold)
        context.timeline.add(FAULT_FIRED, f"{stop.name} to {victim.name}'s main process "
                                          f"({'cold' if cold else 'warm'} shutdown, as a "
                                          "deploy or scale-down)", at=at)
        if cold:
            # The task in hand is not waited for: its process must be gone before the step
            # paused at the fault point is let go, or a worker slow to tear its pool
            # down (seen on RabbitMQ) would run the step it was meant not to wait for.
            workers.await_exit(victim)
            context.release()
        else:
            context.release()  # a warm shutdown finishes the task in hand
            workers.await_exit(victim)
        workers.replace(victim, context.plan.restart_delay)


FAULT = StopWorker()
