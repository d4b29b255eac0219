"""An operator rolls back: instances in flight are cancelled at a chosen point.

Each engine cancels as it can (`Engine.cancel`): Temporal cancels the workflow, which
compensates; a Celery chain revokes its tasks; the state machine stores a cancel request
that its next advance turns into compensation. The step paused at the point is then let
go, as it would run on in a real system. The verdict (`graduate.check.judge_rollback`):
compensation ran for exactly the steps that applied, in reverse, once each, and the
instance ended compensated with nothing applied after its compensation began.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import ClassVar

from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import (
    EVERY,
    FAULT_FIRED,
    Fault,
    FaultContext,
    FaultPlan,
    OptionValue,
)
from graduate.errors import GraduateError
from graduate.runs.timeline import EventKind

NAME = "rollback-rehearsal"
CANCELLED = EventKind("rollback-cancel", "operator cancelled the instance (rollback)", "fault")
REFUSED = EventKind("rollback-cancel-refused", "the engine refused the cancellation", "stop")


class RollbackRehearsal(Fault):
    name = NAME
    description = ("cancel instances in flight, as an operator rolling back, and check "
                   "that what applied is compensated")
    title = "a rollback rehearsal"
    options = (EVERY,)
    # ADR 0001's rehearsal is "cancel + compensation" of what is in flight: any run counts.
    proven_with: ClassVar[Mapping[str, OptionValue]] = {}
    events = (FAULT_FIRED, CANCELLED, REFUSED)
    group = "operator"
    expects_resume = False  # the instance is stopped on purpose
    # A matrix rehearses where ADR 0001 asks for it, before a worker upgrade: while
    # instances are parked at a human wait, the window a deploy lands in.
    at_wait = True

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if not engine.capabilities.compensation:
            return (f"{engine.product} has no compensation path: there is nothing to "
                    "rehearse a rollback with")
        if not engine.capabilities.cancellation:
            return (f"{engine.title} offers no way to cancel an instance: there is nothing "
                    "to ask for a rollback")
        return None

    def variant(self, plan: FaultPlan) -> str:
        return " (every instance in flight)" if plan.option(EVERY.name) else ""

    def fire(self, context: FaultContext) -> None:
        session = context.session
        targets = context.in_flight()
        context.timeline.add(FAULT_FIRED, f"operator rolls back {len(targets)} instance(s)")
        for iid in targets:
            at = time.time()
            try:
                session.engine.cancel(iid)
            except GraduateError as error:
                context.timeline.add(REFUSED, f"{iid}: {error}", at=at, instance=iid)
                continue
            context.acts.cancelled[iid] = at
            context.timeline.add(CANCELLED, iid, at=at, instance=iid)
        # The step paused at the point goes on, as it would: whether its effect lands,
        # and is then compensated, is the engine's to handle.
        context.release()


FAULT = RollbackRehearsal()
