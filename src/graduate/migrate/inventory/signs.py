"""Signs that a flow outgrew Celery: beat schedules and periodic sweeps over rows in a
state, a status field advanced by tasks, compensation on failure paths, the same
commitment reached from a Temporal activity or a LangGraph node; and crash-prone tasks.
"""

from __future__ import annotations

import re

from graduate.migrate.inventory.model import FindingKind, Location
from graduate.migrate.inventory.project import CELERY_METHODS, Project, Task, text
from graduate.migrate.inventory.reader import ModuleFacts
from graduate.migrate.inventory.values import Ref, Schedule, seconds

# An undo on a failure path: refund, void, revert, release, cancel, rollback, ...
_COMPENSATION = re.compile(
    r"(^|_)(refund|void|revert|release|cancel|rollback|roll_back|compensate|undo|reverse"
    r"|withdraw|unreserve)", re.IGNORECASE)
# A name that tells someone of a cancellation or refund (`send_order_canceled_email_task`)
# reports the undo; it undoes nothing itself.
_TELLS = re.compile(r"(^|_)(e?mails?|sms|notify|notifications?|messages?|alerts?|webhooks?)"
                    r"(_|$)", re.IGNORECASE)
# Calls that end the pool process a task runs in, or can (native code, exits).
_CRASHERS = frozenset({"os._exit", "os.abort", "os.kill", "sys.exit"})
_CRASHING_MODULES = frozenset({"subprocess", "ctypes", "cffi", "multiprocessing"})
# Decorators that make a function a workflow's step, and what to call it.
_WORKFLOW_STEPS = {"temporalio.activity.defn": "Temporal activity",
                   "activity.defn": "Temporal activity",
                   "langgraph.func.task": "LangGraph task"}
_HUMAN = re.compile(r"approv|await|review|sign|pending_(?:human|manual)|manual", re.IGNORECASE)


_Callers = dict[tuple[str, str], list[Task]]


def _callers(project: Project) -> _Callers:
    """The tasks that call each of the project's module-level functions directly."""
    callers: _Callers = {}
    for task in project.tasks:
        for _, call in (c for body in task.bodies for c in task.facts.calls_in(body)):
            if not call.func:
                continue
            if (full := project.symbols.resolve(task.facts, call.func)) is None:
                continue
            owner, name = project.symbols.defined[full], full.rsplit(".", 1)[-1]
            if owner.function(name) is not None:
                callers.setdefault((owner.module, name), []).append(task)
    return callers


def _doers(project: Project, facts: ModuleFacts, function: str,
           callers: _Callers) -> list[tuple[Task, str]]:
    """The tasks a state change in `function` belongs to: the task itself, or the tasks
    that call the helper it is in (`_settle(...)`), with how."""
    if (task := project.task_of_body(facts, function)) is not None:
        return [(task, "")]
    unique = {id(t): t for t in callers.get((facts.module, function), [])}
    return [(t, f" (in {function}(), which {t.short} calls)") for t in unique.values()]


def _beat(project: Project, modules: list[ModuleFacts], callers: _Callers) -> None:
    for facts in modules:
        for entry in facts.beat:
            where = Location(facts.path, entry.line)
            task: Task | None = None
            if isinstance(entry.task, str):
                task = project.task_named(entry.task)
            elif isinstance(entry.task, Ref):
                task = project.task(project.symbols.resolve(facts, entry.task.dotted))
            if entry.decorates and task is None:
                continue  # another library's `periodic_task` decorator: no Celery beat
            every = (entry.schedule.seconds if isinstance(entry.schedule, Schedule)
                     else seconds(entry.schedule))
            if task is not None:
                project.scheduled.append((task, every, where))
            shown = task.short if task else (
                entry.task if isinstance(entry.task, str) else text(entry.task))
            missing = "" if task else " (not found in this code)"
            schedule = (f"every {every:g} s" if every is not None
                        and not isinstance(entry.schedule, Schedule) else text(entry.schedule))
            project.find(FindingKind.BEAT, entry.name, where,
                         f"task {shown}{missing}; schedule {schedule}")
    swept = {id(task) for task, _, _ in project.scheduled}
    for facts in modules:
        for query in facts.state_queries:
            for task, how in _doers(project, facts, query.function, callers):
                if id(task) in swept:
                    where = Location(facts.path, query.line)
                    project.sweeps.append((task, query, where))
                    project.find(FindingKind.STATE_SWEEP, task.short, where,
                                 f"periodic query of rows with {query.field} = "
                                 f"{query.value}{how}")


def _state(project: Project, facts: ModuleFacts, callers: _Callers) -> None:
    for write in facts.status_writes:
        for task, how in _doers(project, facts, write.function, callers):
            where = Location(facts.path, write.line)
            project.status_writes.append((task, write, where))
            project.find(FindingKind.STATUS_WRITE, task.short, where,
                         f"{write.field} = {write.value}{how}")
    for cls in facts.classes:
        for name, line in cls.state_fields:
            project.find(FindingKind.STATE_MODEL, f"{cls.name}.{name}",
                         Location(facts.path, line), "a persisted status field")


def _compensations(project: Project) -> None:
    handlers = {id(handler) for _, handler, _ in project.error_edges}
    for task in project.tasks:
        bodies = [(task.facts, body, "except block") for body in task.bodies]
        bodies += [(facts, body, "on_failure") for facts, body in task.failure_bodies]
        if id(task) in handlers:
            bodies += [(task.facts, body, "link_error handler") for body in task.bodies]
        for facts, body, context in bodies:
            for _, call in facts.calls_in(body):
                if not call.func:
                    continue
                last = call.func.rsplit(".", 1)[-1]
                if not undoes(last) or last in CELERY_METHODS:
                    continue
                if context == "except block" and not call.in_except:
                    continue
                where = Location(facts.path, call.line)
                project.compensations.append((task, call.func, where, context))
                project.find(FindingKind.COMPENSATION, call.func, where,
                             f"in the {context} of task {task.short}"
                             if context != "link_error handler"
                             else f"in task {task.short}, a link_error handler")


# -------------------------------------------------------------------------- workflows


def _workflows(project: Project, facts: ModuleFacts) -> None:
    """The steps of workflows: Temporal activities (functions, or methods of the class that
    holds their clients), LangGraph nodes and functional-API tasks."""
    symbols = project.symbols
    for function in facts.functions:
        for decorator in function.decorators:
            kind = _WORKFLOW_STEPS.get(symbols.qualify(facts, decorator.ref or ""))
            if kind is not None:
                where = Location(facts.path, function.line)
                project.workflows.append((f"{kind} {function.qualname}", facts,
                                          function.qualname, where))
                project.find(FindingKind.WORKFLOW, function.qualname, where, kind)
    if not any(target.startswith("langgraph") for target in facts.imports.values()):
        return
    for call in facts.calls:
        if call.method != "add_node":
            continue
        for arg in call.positional:
            if isinstance(arg, Ref) and (full := symbols.resolve(facts, arg.dotted)):
                where = Location(facts.path, call.line)
                name = full.rsplit(".", 1)[-1]
                project.workflows.append((f"LangGraph node {name}", symbols.defined[full],
                                          name, where))
                project.find(FindingKind.WORKFLOW, name, where, "LangGraph node")


def undoes(name: str) -> bool:
    """Whether a name says it undoes something: refund, void_draft, compensate, ...; not
    a notice of it (`send_refund_email`)."""
    return _COMPENSATION.search(name) is not None and _TELLS.search(name) is None


def crash_prone(project: Project, task: Task) -> Location | None:
    """Where a task calls something that can end its pool process (exit, kill, native code)."""
    for body in task.bodies:
        for _, call in task.facts.calls_in(body):
            if not call.func:
                continue
            qualified = project.symbols.qualify(task.facts, call.func)
            if qualified in _CRASHERS or qualified.split(".")[0] in _CRASHING_MODULES:
                return Location(task.facts.path, call.line)
    return None


def human_wait(project: Project, tasks: list[Task]) -> tuple[Location, str, Task] | None:
    """A state that waits for a person (awaiting approval, pending review) in these tasks:
    where, what, and the task that puts rows in it (or sweeps it, if none does)."""
    candidates = [(task, state, where) for task, state, where
                  in [*project.among(project.status_writes, tasks),
                      *project.among(project.sweeps, tasks)]
                  if _HUMAN.search(state.value)]
    # A task that writes the waiting state itself, as a literal, says most precisely where
    # the flow starts to wait; a helper's `status = ?` says least.
    candidates.sort(key=lambda c: (c[1].function not in c[0].bodies, "'" not in c[1].value
                                   and '"' not in c[1].value))
    if not candidates:
        return None
    task, state, where = candidates[0]
    return where, f"{state.field} {state.value}", task


def read_signs(project: Project, modules: list[ModuleFacts]) -> None:
    """State, workflows, beat and compensation, once every task and start is linked."""
    callers = _callers(project)
    for facts in modules:
        _state(project, facts, callers)
        _workflows(project, facts)
    _beat(project, modules, callers)
    _compensations(project)
