"""A rolling deploy of a changed flow while instances are in flight.

Options: `change` (what changed: reorder or add-step) and `versioned` (deploy with the
engine's versioning guard, where the engine declares one).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import ClassVar

from graduate.adapters.registry import EngineDescription
from graduate.chaos.changes import CHANGES, changed_flow
from graduate.chaos.faults import (
    FAULT_FIRED,
    Fault,
    FaultContext,
    FaultOption,
    FaultPlan,
    OptionValue,
)
from graduate.flow import Flow, write_flow_json
from graduate.runs.supervisor import WORKER_EXITED, WORKER_FORCED, WORKER_STARTED

NAME = "deploy-change"
VERSIONED = FaultOption("versioned", False, "deploy with the engine's versioning guard",
                        sentence="with the engine's versioning guard")
CHANGE = FaultOption("change", "reorder", "what the deploy changes", choices=CHANGES)


class DeployChange(Fault):
    name = NAME
    description = "replace the workers with a changed version of the flow mid-flight"
    title = "a deploy of changed code"
    options = (VERSIONED, CHANGE)
    # A deploy counts only with the engine's versioning guard on: that is the story
    # ADR 0001 asks for, and the unguarded deploy is expected to break.
    proven_with: ClassVar[Mapping[str, OptionValue]] = {VERSIONED.name: True}
    changes_code = True
    events = (FAULT_FIRED, WORKER_EXITED, WORKER_FORCED, WORKER_STARTED)
    # A deploy lands while instances are parked at a human wait: the usual window.
    at_wait = True

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if engine.runs_app:
            return (f"graduate cannot write a new version of {engine.title}'s code; deploy "
                    "your change yourself and run again")
        if plan.option(VERSIONED.name) and not engine.capabilities.versioning:
            return (f"{engine.product} has no versioning guard: a team would have to build "
                    f"one (see the unversioned {NAME} for what happens without)")
        return None

    def variant(self, plan: FaultPlan) -> str:
        versioned = ", versioned" if plan.option(VERSIONED.name) else ", unversioned"
        return f" ({plan.option(CHANGE.name)}{versioned})"

    def check(self, plan: FaultPlan, flow: Flow) -> FaultPlan:
        changed_flow(flow, plan.option(CHANGE.name))  # refuses a change the flow cannot take
        return plan

    def fire(self, context: FaultContext) -> None:
        """Each worker is stopped as a deploy stops it (SIGTERM) and replaced by one
        running the new version."""
        session, plan = context.session, context.plan
        versioned, change = bool(plan.option(VERSIONED.name)), str(plan.option(CHANGE.name))
        old = session.flow
        new = write_flow_json(changed_flow(old, change),
                              session.run_dir / "deploy" / f"{old.name}-v{old.version + 1}.json")
        session.engine.deploy(new, previous=old if versioned else None)
        context.timeline.add(FAULT_FIRED, f"deploy of {old.name} v{new.version} ({change}, "
                                          f"{'with' if versioned else 'without'} versioning "
                                          "guard)")
        supervisor = session.supervisor
        for worker in supervisor.workers:
            worker.popen.send_signal(signal.SIGTERM)
            supervisor.await_exit(worker)
            supervisor.replace(worker, plan.restart_delay)


FAULT = DeployChange()
