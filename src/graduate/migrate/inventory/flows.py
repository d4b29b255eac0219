"""Group tasks into flows (call graph and canvas) and turn each task into a flow step.

Tasks that start one another, run in one canvas, handle one another's errors, or advance
the same status value are one flow; but two entries that start one task are two flows,
the task a step of each. Its steps are ordered by who starts whom; error handlers
(link_error) are its compensations, not steps.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Literal

from graduate.flow import NAME_LIMIT
from graduate.migrate.inventory.hazards import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_DELAY,
    option,
)
from graduate.migrate.inventory.model import Evidence, FlowStep, Location
from graduate.migrate.inventory.project import Project, Task, reached
from graduate.migrate.inventory.signs import undoes
from graduate.migrate.inventory.values import seconds

_NOT_NAME = re.compile(r"[^a-z0-9_]+")
_GENERIC_MODULES = frozenset({"clients", "client", "integrations", "services", "external",
                              "api", "apis", "gateways", "providers", "vendors", "adapters"})


@dataclass
class Group:
    """One flow's tasks before scoring."""

    name: str
    tasks: list[Task]             # steps, in order
    handlers: list[Task]          # error handlers


def group(project: Project) -> list[Group]:
    """Every flow in the project: each task in one, or in each of the flows whose entries
    start it."""
    parent = {id(t): id(t) for t in project.tasks}

    def root(key: int) -> int:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(a: Task, b: Task) -> None:
        parent[root(id(a))] = root(id(b))

    for before, after, _ in [*project.edges, *project.error_edges]:
        union(before, after)
    for members in project.together:
        for member in members[1:]:
            union(members[0], member)
    swept = [(sweeper, writer) for sweeper, query, _ in project.sweeps
             for writer, write, _ in project.status_writes
             if write.field == query.field and _same_state(write.value, query.value)]
    for sweeper, writer in swept:
        union(sweeper, writer)
    # What each task reaches by one edge, any component: asked of each component below.
    onward: dict[int, list[Task]] = {}

    def reach(before: Task, then: Task) -> None:
        if before is not then:
            onward.setdefault(id(before), []).append(then)

    for before, then, _ in [*project.edges, *project.error_edges]:
        reach(before, then)
    for members in project.together:  # run as one: each reaches the others
        for one in members:
            for other in members:
                reach(one, other)
    for sweeper, writer in swept:
        reach(sweeper, writer)
        reach(writer, sweeper)
    components: dict[int, list[Task]] = {}
    for task in project.tasks:
        components.setdefault(root(id(task)), []).append(task)
    handlers = {id(h) for _, h, _ in project.error_edges}
    linked = {id(t) for edge in project.edges for t in edge[:2]}
    groups: list[Group] = []
    taken: set[str] = set()
    for component in components.values():
        for members in _by_entry(component, onward):
            steps = [t for t in members if id(t) not in handlers or id(t) in linked]
            ordered = _order(project, steps) if steps else members
            name = _unique(_name(ordered[0].short), taken)
            placed = {id(t) for t in ordered}
            groups.append(Group(name, ordered, [t for t in members if id(t) not in placed]))
    return groups


def _by_entry(component: list[Task], onward: dict[int, list[Task]]) -> list[list[Task]]:
    """The flows of one component: one per entry (a task no other of them starts) with
    what it starts, when each task is reached from an entry. Two entries that start one
    task (a webhook sender started by the notifier and by a manual retry) are two flows,
    the shared task a step of each; the tasks of one canvas group, or a sweep and the
    task writing the state it sweeps, stay one flow."""
    ids = {id(t) for t in component}  # every edge of a member stays in its component
    started = {id(t) for member in component for t in onward.get(id(member), ())}
    entries = [t for t in component if id(t) not in started]
    if len(entries) < 2:
        return [component]
    reaches = [{id(t) for t in reached([entry], onward)[0]} for entry in entries]
    if set().union(*reaches) != ids:
        return [component]  # a task no entry reaches: the component is one flow
    return [[t for t in component if id(t) in reach] for reach in reaches]


def _same_state(written: str, queried: str) -> bool:
    return written.strip("'\"") == queried.strip("'\"") or written.strip("'\"") in queried


def _order(project: Project, tasks: list[Task]) -> list[Task]:
    """Who starts whom first (a topological order); ties and cycles by place in the code."""
    ids = {id(t) for t in tasks}
    incoming = {id(t): 0 for t in tasks}
    successors: dict[int, list[Task]] = {id(t): [] for t in tasks}
    linked: set[tuple[int, int]] = set()
    for before, after, _ in project.among(project.edges, tasks):
        if id(after) in ids and before is not after and (
                (id(before), id(after)) not in linked):
            linked.add((id(before), id(after)))
            successors[id(before)].append(after)
            incoming[id(after)] += 1
    # The ready task first in the code goes next (ties in the order they became ready).
    ready = [(_place(t), n, t) for n, t in enumerate(t for t in tasks if incoming[id(t)] == 0)]
    heapq.heapify(ready)
    count = len(ready)
    ordered: list[Task] = []
    while ready:
        task = heapq.heappop(ready)[2]
        ordered.append(task)
        for after in successors[id(task)]:
            incoming[id(after)] -= 1
            if incoming[id(after)] == 0:
                heapq.heappush(ready, (_place(after), count, after))
                count += 1
    placed = {id(t) for t in ordered}
    ordered += sorted((t for t in tasks if id(t) not in placed), key=_place)
    return ordered


def _place(task: Task) -> tuple[str, int]:
    return task.location.path, task.location.line


def _name(text: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", text).lower()
    name = _NOT_NAME.sub("_", snake).strip("_") or "flow"
    return fit_name(name if name[0].isalpha() else f"flow_{name}")


def fit_name(name: str, suffix: str = "") -> str:
    """`name` + `suffix`, `name` cut short enough that the whole is a flow's name."""
    return name[:NAME_LIMIT - len(suffix)].rstrip("_") + suffix


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = fit_name(name, f"_{number}"), number + 1
    taken.add(candidate)
    return candidate


# -------------------------------------------------------------------------- steps


def effect_name(project: Project, qualified: str) -> str:
    """`system.operation` for a callee: a project function's module names the system
    (`integrations/crm.py: update_deal` -> `crm.update_deal`), a library its package
    (`stripe.Refund.create` -> `stripe.create`; `integrations.crm.activate` -> `crm.activate`)."""
    parts = qualified.split(".")
    if project.symbols.find(qualified) is not None and len(parts) >= 2:
        system, operation = parts[-2], parts[-1]
        # `clients.crm_create_draft`: a module of many systems' clients names none of them
        if system in _GENERIC_MODULES and "_" in operation.strip("_"):
            system, operation = operation.strip("_").split("_", 1)
    else:
        system, operation = parts[0], parts[-1]
        # `integrations.crm.create_draft` from a package outside the folder read: a folder
        # of clients names none of them, the module under it does
        if system in _GENERIC_MODULES and len(parts) >= 3:
            system = parts[1]
    return f"{_name(system)}.{_name(operation)}"


def effects(project: Project, task: Task) -> list[tuple[str, Location]]:
    """The external calls a task makes itself (depth 0), as `system.operation`."""
    found: list[tuple[str, Location]] = []
    for body in task.bodies:
        for callee, where, depth in project.effects(task.facts, body):
            if depth == 0:
                found.append((effect_name(project, callee), where))
    return found


def own_effect(project: Project, task: Task) -> str:
    """The first external call a task makes, or (none found) the task itself, named after
    its module: `tasks.expire_stale_approvals`."""
    direct = effects(project, task)
    module = task.facts.module.rsplit(".", 1)[-1] or "app"
    return direct[0][0] if direct else f"{_name(module)}.{_name(task.short)}"


def step(project: Project, task: Task, handlers: dict[int, Task]) -> FlowStep:
    """What the flow file needs to know of one task: effect, timeout, retries, delay,
    compensation, and its role in the flow."""
    effect = own_effect(project, task)
    hard, _ = option(project, task, "time_limit")
    soft, _ = option(project, task, "soft_time_limit")
    limits = [s for s in (seconds(hard), seconds(soft)) if s]
    timeout = min(limits) if limits else None  # the soft limit stops the task first
    retry_kwargs = task.options.get("retry_kwargs")
    retry_kwargs = retry_kwargs if isinstance(retry_kwargs, dict) else {}
    retry_sites = [delay for _, delay, _ in project.among(project.retries, [task])]
    retries = "autoretry_for" in task.options or bool(retry_sites)
    max_retries = task.options.get("max_retries", retry_kwargs.get("max_retries"))
    attempts = 1
    if retries:
        attempts = 1 + (max_retries if isinstance(max_retries, int) and max_retries >= 0
                        else DEFAULT_MAX_RETRIES)
    backoff_value = task.options.get("retry_backoff")
    backoff = backoff_value is True or bool(seconds(backoff_value))
    delay = next((d for d in retry_sites if d), None) or seconds(retry_kwargs.get("countdown"))
    if backoff:
        delay = 1.0 if backoff_value is True else seconds(backoff_value)
    if retries and delay is None:
        delay = seconds(task.options.get("default_retry_delay")) or DEFAULT_RETRY_DELAY
    waits = [launch.delay for launch in project.among(project.launches, [task]) if launch.delay]
    compensation = next((c for _, c, _, context in project.among(project.compensations, [task])
                         if context != "link_error handler"), None)
    handler = handlers.get(id(task))
    comp_effect = None
    if compensation is not None:
        full = project.symbols.qualify(task.facts, compensation)
        comp_effect = effect_name(project, full)
    elif handler is not None:
        comp_effect = own_effect(project, handler)
    role: Literal["step", "sweep", "compensation"] = "step"
    if project.among(project.sweeps, [task]):
        role = "sweep"
    elif project.among(project.error_edges, [task], at=1) or undoes(task.short):
        role = "compensation"
    return FlowStep(
        task=task.short, location=task.location, effect=effect, timeout=timeout,
        max_attempts=min(attempts, 100), retry_delay=delay if retries else None,
        backoff=backoff, delay_before=max(waits) if waits else None,
        compensation=comp_effect, idempotent=task.idempotent, role=role)


def evidence_of_effects(project: Project, tasks: list[Task]) -> list[Evidence]:
    return [Evidence(where, f"{task.short} calls {effect}")
            for task in tasks for effect, where in effects(project, task)]
