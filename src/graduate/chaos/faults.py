"""The faults graduate can fire, where they fire, and on which engines they apply.

A fault point is deterministic: `before-effect` and `after-effect` make the armed step
pause in the ledger (see `Ledger.arm`) and the fault fires only once it reports there;
`during-wait` fires once an instance waits on the named wait; `+SECONDS` fires at a
time offset from the start of the run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

from graduate.chaos.changes import changed_flow
from graduate.errors import ConfigError
from graduate.flow import Flow, Step, Wait

FaultKind: TypeAlias = Literal[
    "none", "kill-worker", "kill-pool-child", "stop-worker", "restart-broker",
    "restart-server", "partition", "deploy-change", "wait-timeout",
]
FAULTS: tuple[FaultKind, ...] = (
    "none", "kill-worker", "kill-pool-child", "stop-worker", "restart-broker",
    "restart-server", "partition", "deploy-change", "wait-timeout",
)
POINTS = ("before-effect", "after-effect", "during-wait")
_OFFSET = re.compile(r"^\+(\d+(?:\.\d+)?)s?$")

DESCRIPTIONS: dict[str, str] = {
    "none": "no fault: the baseline",
    "kill-worker": "SIGKILL to a worker's whole process group, then a new worker",
    "kill-pool-child": "SIGKILL to the process running the step; the worker's main process "
                       "lives on",
    "stop-worker": "SIGTERM to a worker (a deploy or a scale-down), then a new worker",
    "restart-broker": "kill the broker (Redis) and start it again on its data",
    "restart-server": "kill the Temporal server and start it again on its database",
    "partition": "cut the network between workers and broker or server, then heal it",
    "deploy-change": "replace the workers with a changed version of the flow mid-flight",
    "wait-timeout": "nobody answers a human wait, so its deadline passes",
}


@dataclass(frozen=True)
class FaultPlan:
    """One fault, where it fires, and how the operator recovers."""

    fault: FaultKind
    step: str | None = None  # a step or wait name; None for "none" or a time offset
    point: str | None = None  # before-effect, after-effect, during-wait, or None
    offset: float | None = None  # seconds from the start, for a time-offset fault
    restart_delay: float = 1.0  # how long the operator takes to restart what was killed
    partition_for: float = 5.0  # how long a partition lasts
    versioned: bool = False  # deploy-change: with the engine's versioning guard
    change: str = "reorder"  # deploy-change: reorder or add-step
    cold: bool = False  # stop-worker: SIGQUIT, a cold shutdown, instead of SIGTERM

    def describe(self) -> str:
        where = (f" at {self.step}:{self.point}" if self.step else
                 f" at +{self.offset:g}s" if self.offset is not None else "")
        variant = ""
        if self.fault == "deploy-change":
            variant = f" ({self.change}{', versioned' if self.versioned else ', unversioned'})"
        if self.fault == "stop-worker":
            variant = " (cold shutdown)" if self.cold else " (warm shutdown)"
        return f"{self.fault}{where}{variant}"


def parse_plan(fault: str, at: str | None, flow: Flow, *, restart_delay: float = 1.0,
               partition_for: float = 5.0, versioned: bool = False,
               change: str = "reorder", cold: bool = False) -> FaultPlan:
    """Validate `--fault F --at STEP:POINT` (or `+SECONDS`) against the flow."""
    if fault not in FAULTS:
        raise ConfigError(f"unknown fault {fault!r}; choose one of: {', '.join(FAULTS)}")
    if fault == "deploy-change":
        changed_flow(flow, change)  # refuses a change the flow cannot take, before any run
    kind: FaultKind = fault  # type: ignore[assignment,unused-ignore]
    if kind == "none":
        return FaultPlan("none")
    if kind == "wait-timeout":
        wait = _wait(flow, (at or "").partition(":")[0] or None)
        return FaultPlan(kind, step=wait.name, point="during-wait",
                         restart_delay=restart_delay)
    if not at:
        raise ConfigError(f"--fault {fault} needs --at STEP:POINT (POINT is one of "
                          f"{', '.join(POINTS)}) or --at +SECONDS")
    if match := _OFFSET.match(at):
        return FaultPlan(kind, offset=float(match.group(1)), restart_delay=restart_delay,
                         partition_for=partition_for, versioned=versioned, change=change,
                         cold=cold)
    name, sep, point = at.partition(":")
    if not sep or point not in POINTS:
        raise ConfigError(f"--at {at!r} is not understood; write STEP:POINT with POINT one "
                          f"of {', '.join(POINTS)}, or +SECONDS (for example +2.5)")
    node = next((n for n in flow.nodes if n.name == name), None)
    if point == "during-wait":
        _wait(flow, name)
    elif not isinstance(node, Step):
        steps = ", ".join(s.name for s in flow.steps)
        raise ConfigError(f"--at {at!r}: flow {flow.name!r} has no step {name!r}; its steps: "
                          f"{steps}")
    return FaultPlan(kind, step=name, point=point, restart_delay=restart_delay,
                     partition_for=partition_for, versioned=versioned, change=change,
                     cold=cold)


def _wait(flow: Flow, name: str | None) -> Wait:
    waits = flow.waits
    if not waits:
        raise ConfigError(f"flow {flow.name!r} has no wait, so a wait cannot time out")
    if name is None:
        return waits[0]
    for wait in waits:
        if wait.name == name:
            return wait
    raise ConfigError(f"flow {flow.name!r} has no wait {name!r}; its waits: "
                      f"{', '.join(w.name for w in waits)}")


def not_applicable(plan: FaultPlan, engine: str, *, local_broker: bool,
                   local_server: bool) -> str | None:
    """Why `plan` cannot be performed on `engine` with these services, or None."""
    temporal = engine == "temporal"
    if plan.fault == "restart-broker":
        if temporal:
            return "Temporal has no broker: workers talk to the server (see restart-server)"
        if not local_broker:
            return "the broker is external: graduate cannot kill and restart it"
    if plan.fault == "restart-server":
        if not temporal:
            return "Celery has no workflow server: its state is in the broker (see " \
                   "restart-broker)"
        if not local_server:
            return "the Temporal server is external: graduate cannot kill and restart it"
    if plan.fault == "deploy-change" and plan.versioned and not temporal:
        return ("Celery has no versioning guard: a team would have to build one (see the "
                "unversioned deploy-change for what happens without)")
    if plan.fault == "kill-pool-child" and temporal:
        return ("the Temporal worker runs activities in threads of its own process: there "
                "is no pool child to kill (see kill-worker)")
    return None
