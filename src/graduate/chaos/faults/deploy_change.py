"""A rolling deploy of a changed flow while instances are in flight.

Options: `change` (what changed: reorder or add-step), `versioned` (deploy with the
engine's versioning guard in the code, where the engine declares one: Temporal's
`workflow.patched`) and `pinned` (deploy as a new worker version beside the old one,
where the engine runs versions side by side: Temporal's worker deployment versions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from graduate.adapters.base import PredictsDeploys
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
from graduate.errors import ConfigError
from graduate.flow import Flow, write_flow_json
from graduate.runs.supervisor import WORKER_EXITED, WORKER_FORCED, WORKER_STARTED
from graduate.runs.timeline import INSTANCES_STARTED, EventKind

NAME = "deploy-change"
VERSIONED = FaultOption("versioned", False, "deploy with the engine's versioning guard",
                        sentence="with the engine's versioning guard")
PINNED = FaultOption("pinned", False, "deploy as a new worker version; the old workers keep "
                                     "serving the instances pinned to theirs",
                     sentence="as a new worker version, each instance pinned to its own")
CHANGE = FaultOption("change", "reorder", "what the deploy changes", choices=CHANGES)
REPLAY_PREDICTED = EventKind("replay-predicted",
                             "replay's prediction for an instance, before the deploy", "info")


class DeployChange(Fault):
    name = NAME
    description = "replace the workers with a changed version of the flow mid-flight"
    title = "a deploy of changed code"
    options = (VERSIONED, PINNED, CHANGE)
    # A deploy counts only with the engine's versioning guard on: that is the story
    # ADR 0001 asks for, and the unguarded deploy is expected to break.
    proven_with: ClassVar[Mapping[str, OptionValue]] = {VERSIONED.name: True}
    changes_code = True
    # Pinned, the instance started after the deploy is the first on the new version.
    events = (FAULT_FIRED, REPLAY_PREDICTED, WORKER_EXITED, WORKER_FORCED, WORKER_STARTED,
              INSTANCES_STARTED)
    # A deploy lands while instances are parked at a human wait: the usual window.
    at_wait = True

    def proves(self, options: Mapping[str, OptionValue]) -> bool:
        # Either guard tells the worker versioning story: patching in the code, or each
        # instance pinned to its worker version.
        return bool(options.get(VERSIONED.name) or options.get(PINNED.name))

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if engine.runs_app:
            return (f"graduate cannot write a new version of {engine.title}'s code; deploy "
                    "your change yourself and run again")
        if plan.option(VERSIONED.name) and not engine.capabilities.versioning:
            return (f"{engine.product} has no versioning guard: a team would have to build "
                    f"one (see the unversioned {NAME} for what happens without)")
        if plan.option(PINNED.name) and not engine.capabilities.worker_versioning:
            return (f"{engine.product} cannot run two versions of its workers side by side, "
                    "each instance pinned to its own")
        return None

    def needs_own_workers(self, plan: FaultPlan) -> str | None:
        if plan.option(PINNED.name):
            return ("a pinned deploy starts workers of the new version beside the old ones; "
                    "graduate starts no workers beside registered workers it did not start")
        return None  # each registered worker's agent restarts it on the new version

    def variant(self, plan: FaultPlan) -> str:
        guard = (", pinned to worker versions" if plan.option(PINNED.name) else
                 ", versioned" if plan.option(VERSIONED.name) else ", unversioned")
        return f" ({plan.option(CHANGE.name)}{guard})"

    def check(self, plan: FaultPlan, flow: Flow) -> FaultPlan:
        changed_flow(flow, plan.option(CHANGE.name))  # refuses a change the flow cannot take
        if plan.option(VERSIONED.name) and plan.option(PINNED.name):
            raise ConfigError(f"{NAME}: choose one guard, versioned (the version decided in "
                              "the workflow code) or pinned (worker versions side by side)")
        return plan

    def engine_settings(self, plan: FaultPlan, engine: EngineDescription,
                        settings: Mapping[str, Any]) -> dict[str, Any]:
        # Pinning starts with the first workers: each instance is pinned to the version
        # that ran its first workflow task.
        if plan.option(PINNED.name) and engine.capabilities.worker_versioning:
            return {**settings, "worker_versioning": True}
        return dict(settings)

    def fire(self, context: FaultContext) -> None:
        """Each worker is stopped as a deploy stops it (SIGTERM) and replaced by one
        running the new version; or, pinned, the new version's workers start beside the
        old ones. Replay first predicts what the new code does to the instances in flight."""
        session, plan = context.session, context.plan
        versioned, change = bool(plan.option(VERSIONED.name)), str(plan.option(CHANGE.name))
        old = session.flow
        new = write_flow_json(changed_flow(old, change),
                              session.run_dir / "deploy" / f"{old.name}-v{old.version + 1}.json")
        if not plan.option(PINNED.name):  # pinned instances never replay on the new code
            self._predict(context, new, old if versioned else None)
        session.engine.deploy(new, previous=old if versioned else None)
        if plan.option(PINNED.name):
            self._deploy_beside(context, old, new, change)
            return
        context.timeline.add(FAULT_FIRED, f"deploy of {old.name} v{new.version} ({change}, "
                                          f"{'with' if versioned else 'without'} versioning "
                                          "guard)")
        session.workers.redeploy(new, old if versioned else None, plan.restart_delay)

    def _predict(self, context: FaultContext, new: Flow, previous: Flow | None) -> None:
        """What `graduate replay` predicts for each instance in flight, in the timeline
        beside what then happens to it."""
        session = context.session
        if not isinstance(session.engine, PredictsDeploys):
            return
        in_flight = [iid for iid in session.instance_ids
                     if not session.engine.status(iid).state.finished]
        for replayed in session.engine.predict_deploy(in_flight, new, previous):
            context.timeline.add(REPLAY_PREDICTED, replayed.describe(),
                                 instance=replayed.instance_id)

    def _deploy_beside(self, context: FaultContext, old: Flow, new: Flow, change: str) -> None:
        """Workers of the new version start beside the old ones and become the current
        version; the old workers keep serving the instances pinned to them, and the
        instance started next starts on the new version."""
        session = context.session
        count = len(session.workers.current())
        context.timeline.add(FAULT_FIRED, f"deploy of {old.name} v{new.version} ({change}) as "
                                          f"a new worker version: {count} worker(s) of "
                                          f"v{new.version} beside those of v{old.version}, "
                                          "which keep their pinned instances")
        for worker in session.workers.start(count):
            # From its spawn, as every recovery counts (the supervisor's replacements):
            # a new worker may take work before its readiness is seen.
            context.timeline.add(WORKER_STARTED, f"{worker.name} (pid {worker.pid}) runs "
                                                 f"v{new.version}", at=worker.began_at)
        request = session.start_instance()
        context.timeline.add(INSTANCES_STARTED, f"{request.instance_id}, after the deploy",
                             instance=request.instance_id)


FAULT = DeployChange()
