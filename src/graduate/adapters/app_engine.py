"""What the engines that run a team's own app share (no SDK here): how the team's worker
processes are started, and how far an instance got, read from the ledger.

graduate does not know the team's tables or task names, so an app engine reads an
instance's progress from the ledger rows its `graduate.effect` calls wrote (a step is
done once its effect applied or was absorbed), and asks the engine itself only what
only the engine knows: whether the workflow closed (Temporal), whether the broker
still holds a message for the instance (Celery).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from graduate.adapters.base import WORKER_READY_TIMEOUT, InstanceState
from graduate.apps import App
from graduate.config import env_var
from graduate.flow import WAIT_ENDS, Flow, Node, Parallel, Step, Wait
from graduate.instrument import RunContext
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.processes import ManagedProcess, spawn, wait_until
from graduate.services.model import Services


def app_environment(app: App, flow: Flow, services: Services, run_id: str,
                    variables: Mapping[str, str | None]) -> dict[str, str]:
    """The environment of a team's worker under a run: the harness's own (the team's
    variables pass through), the project's folder on the path, the run's context for
    `graduate.effect`, and the services as GRADUATE_* variables, never as arguments."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(app.project_dir.resolve()), *filter(None, [environ.get("PYTHONPATH")])])
    environ.update(RunContext(ledger_url=services.ledger_url, run_id=run_id,
                              flow_source=flow.source).environ())
    for key, value in variables.items():
        if value is None:
            environ.pop(env_var(key), None)
        else:
            environ[env_var(key)] = value
    return environ


def start_app_worker(name: str, module: str, arguments: Sequence[str], app: App,
                     environ: Mapping[str, str], run_dir: Path) -> ManagedProcess:
    """Start `python -m module ARGUMENTS` (the last argument naming its ready file is
    added here) in its own process group, in the project's folder; return once it
    takes work. The one place where a team's workers are spawned."""
    ready = run_dir / "ready" / f"{name}.ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", module, arguments[0], str(ready), *arguments[1:]]
    process = spawn(name, argv, run_dir / "logs" / f"{name}.log", env=environ,
                    cwd=app.project_dir)
    try:
        wait_until(ready.exists, timeout=WORKER_READY_TIMEOUT, what=f"worker {name}",
                   process=process)
    except BaseException:
        process.stop()
        raise
    return process


@dataclass(frozen=True)
class Progress:
    """How far an instance got, from the ledger: the nodes it passed, and its state as
    far as the effects tell (the engine may know more: a closed workflow, a failure)."""

    done: tuple[str, ...]
    state: InstanceState
    last_effect_at: float | None


def instance_flow(flow: Flow, ledger: Ledger, instance_id: str) -> Flow:
    """The flow the instance runs: its `for_each` steps expanded for the input the ledger
    registered (`Flow.for_instance`)."""
    if not flow.inputs:
        return flow
    record = ledger.find_instance(instance_id)
    return flow.for_instance(() if record is None else record.request)


def progress(flow: Flow, effects: Sequence[EffectRecord]) -> Progress:
    """Done: the steps whose effect applied or was absorbed, and a wait or timer once a
    step after it or a compensation ran. Completed when every step is done; compensated when every
    done step owed a compensation has one; waiting when the next node is a wait."""
    landed = {e.step for e in effects if e.kind == "effect"
              and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)}
    undone = {e.step for e in effects if e.kind == "compensation"
              and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)}
    compensating = any(e.kind == "compensation" for e in effects)
    done: list[str] = []
    later_landed = set(landed)
    for node in flow.nodes:
        if isinstance(node, Step | Parallel):
            inner = node.steps if isinstance(node, Parallel) else (node,)
            for step in inner:
                later_landed.discard(step.name)
                if step.name in landed:
                    done.append(step.name)
            if isinstance(node, Parallel) and all(s.name in landed for s in inner):
                done.append(node.name)  # joined
        elif later_landed or compensating:  # a wait or a timer, passed
            done.append(node.name)
    last = max((e.finished_at for e in effects), default=None)
    owed = [s.name for s in flow.compensations_for(sorted(landed))]
    if compensating and all(name in undone for name in owed):
        return Progress(tuple(done), InstanceState.COMPENSATED, last)
    if all(s.name in landed for s in flow.steps):
        return Progress(tuple(done), InstanceState.COMPLETED, last)
    upcoming = next((n for n in flow.nodes if n.name not in done), None)
    if isinstance(upcoming, Wait) and not compensating:
        return Progress(tuple(done), InstanceState.WAITING, None)
    return Progress(tuple(done), InstanceState.RUNNING, None)


def wait_ending(flow: Flow, effects: Sequence[EffectRecord], said: str) -> str | None:
    """How an app's instance ended at a wait, in the words every engine reports
    (`Wait.reason`), so the checker can hold it to the notice it owes; None when it did
    not end at a wait. `said` is the team's own word for the ending (the workflow's
    result, the state in its table): a wait's reason as such (and what follows it after
    ":" or ";"), or just "rejected" or "expired", said of the wait the instance stopped
    at: the first that no step after it landed past."""
    for wait in flow.waits:
        for ending in WAIT_ENDS:
            reason = wait.reason(ending)
            if said == reason or said.startswith((f"{reason};", f"{reason}:")):
                return reason
    end = next((e for e in WAIT_ENDS if e == said), None)
    if end is None:
        return None
    landed = {e.step for e in effects if e.kind == "effect"
              and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)}
    nodes = list(flow.nodes)
    for index, node in enumerate(nodes):
        passed = any(step.name in landed for later in nodes[index + 1:]
                     for step in _steps_of(later))
        if isinstance(node, Wait) and not passed:
            return node.reason(end)
    return None


def owes_notice(flow: Flow, effects: Sequence[EffectRecord], reason: str) -> bool:
    """Whether an instance that ended for `reason` still owes the notice of that ending:
    a team's code sends it after its compensations, so until it lands the instance has
    not finished."""
    notice = flow.notice_for(reason)
    return notice is not None and not any(
        e.step == notice.name and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)
        for e in effects)


def _steps_of(node: Node) -> tuple[Step, ...]:
    if isinstance(node, Parallel):
        return node.steps
    return (node,) if isinstance(node, Step) else ()
