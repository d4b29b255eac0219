"""Link the modules' raw facts into one picture: tasks, how they start each other, beat,
state, compensation, workflows and the external calls each makes, with a finding for each.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graduate.migrate.inventory.config import CelerySettings, read_settings
from graduate.migrate.inventory.model import Finding, FindingKind, Location, Skipped
from graduate.migrate.inventory.reader import (
    Call,
    Canvas,
    ClassDef,
    Function,
    ModuleFacts,
    Sig,
    StatusWrite,
)
from graduate.migrate.inventory.symbols import Symbols
from graduate.migrate.inventory.values import FromEnv, Ref, Schedule, Unknown, seconds

_TASK_DECORATORS = frozenset({"celery.shared_task", "celery.task", "celery.decorators.task",
                              "celery.app.shared_task"})
_TASK_BASES = frozenset({"celery.Task", "celery.app.task.Task", "celery.task.Task"})
_APP_NAMES = frozenset({"app", "celery", "celery_app", "capp"})
_LAUNCH = frozenset({"delay", "apply_async"})
_CELERY_METHODS = frozenset({"delay", "apply_async", "s", "si", "signature", "retry",
                             "send_task", "apply"})
# An undo on a failure path: refund, void, revert, release, cancel, rollback, ...
_COMPENSATION = re.compile(
    r"(^|_)(refund|void|revert|release|cancel|rollback|roll_back|compensate|undo|reverse"
    r"|withdraw|unreserve)", re.IGNORECASE)
# Calls that end the pool process a task runs in, or can (native code, exits).
_CRASHERS = frozenset({"os._exit", "os.abort", "os.kill", "sys.exit"})
_CRASHING_MODULES = frozenset({"subprocess", "ctypes", "cffi", "multiprocessing"})
# Libraries whose calls are not external commitments of the team's own.
_NOT_EFFECTS = frozenset({"celery", "kombu", "django", "temporalio", "langgraph",
                          "langchain_core", "structlog", "pydantic", "attrs", "typing_extensions",
                          "sqlalchemy"}) | frozenset(sys.stdlib_module_names)
_HUMAN = re.compile(r"approv|await|review|sign|pending_(?:human|manual)|manual", re.IGNORECASE)
_REACH_DEPTH = 3


@dataclass
class Task:
    name: str                     # the Celery task name
    short: str                    # the function or class name
    function: str                 # qualified definition
    facts: ModuleFacts
    bodies: tuple[str, ...]       # qualnames in the module whose calls are the task's
    failure_bodies: list[tuple[ModuleFacts, str]]
    location: Location
    options: dict[str, object]
    declared: str
    idempotent: bool
    origins: dict[str, Location] = field(default_factory=dict)  # where each option is set

    def origin(self, key: str) -> Location:
        return self.origins.get(key, self.location)


@dataclass
class Launch:
    task: Task
    location: Location
    how: str
    delay: float | None           # countdown or ETA offset, seconds
    caller: Task | None


@dataclass
class Project:
    root: Path
    symbols: Symbols
    settings: CelerySettings
    tasks: list[Task] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    retries: list[tuple[Task, float | None, Location]] = field(default_factory=list)
    edges: list[tuple[Task, Task, Location]] = field(default_factory=list)
    error_edges: list[tuple[Task, Task, Location]] = field(default_factory=list)
    together: list[list[Task]] = field(default_factory=list)
    scheduled: list[tuple[Task, float | None, Location]] = field(default_factory=list)
    status_writes: list[tuple[Task, StatusWrite, Location]] = field(default_factory=list)
    sweeps: list[tuple[Task, StatusWrite, Location]] = field(default_factory=list)
    compensations: list[tuple[Task, str, Location, str]] = field(default_factory=list)
    workflows: list[tuple[str, str, Location]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def find(self, kind: FindingKind, name: str, location: Location, detail: str = "") -> None:
        self.findings.append(Finding(kind, name, location, detail))

    def task(self, function: str | None) -> Task | None:
        return next((t for t in self.tasks if t.function == function), None) if function else None

    def task_named(self, name: str) -> Task | None:
        """A task by its Celery name; names written against another root match by suffix."""
        for candidate in (t for t in self.tasks if t.name == name):
            return candidate
        suffix = [t for t in self.tasks
                  if t.name.endswith(f".{name}") or name.endswith(f".{t.name}")]
        if len(suffix) == 1:
            return suffix[0]
        short = [t for t in self.tasks if t.short == name.rsplit(".", 1)[-1]]
        return short[0] if len(short) == 1 else None

    def task_of_body(self, facts: ModuleFacts, qualname: str | None) -> Task | None:
        if qualname is None:
            return None
        return next((t for t in self.tasks if t.facts is facts and qualname in t.bodies), None)

    def effects(self, facts: ModuleFacts, qualname: str, depth: int = 0) -> Iterator[
            tuple[str, Location, int]]:
        """External calls a function makes, directly or through the project's functions:
        (qualified callee, where, depth)."""
        for call in facts.calls:
            if call.function != qualname or not call.func or call.method in _CELERY_METHODS:
                continue
            head = call.func.split(".")[0]
            defined = self.symbols.resolve(facts, call.func)
            if defined is not None:
                owner = self.symbols.defined[defined]
                name = defined.rsplit(".", 1)[-1]
                if self.task(defined) is not None:
                    continue
                if any(f.qualname == name for f in owner.functions):
                    yield defined, Location(facts.path, call.line), depth
                    if depth < _REACH_DEPTH:
                        yield from self.effects(owner, name, depth + 1)
                continue
            if head not in facts.imports:
                continue
            qualified = self.symbols.qualify(facts, call.func)
            if qualified.split(".")[0] not in _NOT_EFFECTS and not self.symbols.is_project(
                    qualified):
                yield qualified, Location(facts.path, call.line), depth


def link(root: Path, modules: list[ModuleFacts]) -> Project:
    """The project-wide picture of `modules` (read from files under `root`)."""
    symbols = Symbols(modules)
    project = Project(root, symbols, read_settings(root, modules, symbols))
    apps = _apps(project, modules)
    decorators = _project_decorators(symbols, modules, apps)
    _tasks(project, modules, apps, decorators)
    for facts in modules:
        for module, line in facts.star_imports:
            project.skipped.append(Skipped(
                Location(facts.path, line),
                f"star import from {module or '.'}: the names it brings are not known "
                "without running the code; tasks used through them are not linked"))
        _calls(project, facts)
        _canvases(project, facts)
        _state(project, facts)
        _workflows(project, facts)
    _beat(project, modules)
    _compensations(project)
    _settings_findings(project)
    return project


# -------------------------------------------------------------------------- apps, tasks


def _apps(project: Project, modules: list[ModuleFacts]) -> set[str]:
    apps: set[str] = set()
    for facts in modules:
        for app in facts.apps:
            if project.symbols.qualify(facts, "Celery").startswith("celery"):
                apps.add(f"{facts.module}.{app.var}".lstrip("."))
                project.find(FindingKind.APP, app.var, Location(facts.path, app.line),
                             _kwargstext(app.kwargs))
        for call in facts.calls:
            if call.method == "autodiscover_tasks":
                project.find(FindingKind.SETTING, "autodiscover_tasks",
                             Location(facts.path, call.line),
                             ", ".join(map(text, call.positional)) or "every installed app")
    return apps


def _is_app(symbols: Symbols, facts: ModuleFacts, ref: str, apps: set[str]) -> bool:
    found = symbols.resolve(facts, ref)
    return found in apps if found else ref.rsplit(".", 1)[-1] in _APP_NAMES


_Options = tuple[dict[str, object], dict[str, Location]]  # options, and where each is set


def _task_decorator(symbols: Symbols, facts: ModuleFacts, ref: str | None, apps: set[str],
                    decorators: dict[str, _Options]) -> _Options | None:
    """The options a decorator gives a task, or None if it does not make one."""
    if ref is None:
        return None
    qualified = symbols.qualify(facts, ref)
    if qualified in _TASK_DECORATORS:
        return {}, {}
    if ref.endswith(".task") and _is_app(symbols, facts, ref[:-5], apps):
        return {}, {}
    found = symbols.resolve(facts, ref)
    if found in decorators:
        options, origins = decorators[found]
        return dict(options), dict(origins)
    return None


def _project_decorators(symbols: Symbols, modules: list[ModuleFacts],
                        apps: set[str]) -> dict[str, _Options]:
    """The project's own decorators that make tasks (`def tenant_task(...)` calling
    `shared_task` inside), with the options they pass; found to a fixed point, since one
    such decorator may wrap another."""
    found: dict[str, _Options] = {}
    changed = True
    while changed:
        changed = False
        for facts in modules:
            for function in facts.functions:
                full = f"{facts.module}.{function.qualname}".lstrip(".")
                if full in found or "." in function.qualname or function.decorators:
                    continue
                for call in facts.calls:
                    if call.function != function.qualname:
                        continue
                    made = _task_decorator(symbols, facts, call.func, apps, found)
                    if made is not None:
                        where = Location(facts.path, call.line)
                        found[full] = ({**made[0], **call.kwargs},
                                       {**made[1], **dict.fromkeys(call.kwargs, where)})
                        changed = True
                        break
    return found


def _tasks(project: Project, modules: list[ModuleFacts], apps: set[str],
           decorators: dict[str, _Options]) -> None:
    symbols = project.symbols
    for facts in modules:
        for function in facts.functions:
            if "." in function.qualname:
                continue
            for decorator in function.decorators:
                made = _task_decorator(symbols, facts, decorator.ref, apps, decorators)
                if made is None:
                    continue
                options, origins = made
                options.update(decorator.kwargs)
                origins.update(dict.fromkeys(decorator.kwargs, Location(facts.path,
                                                                         decorator.line)))
                task = _task(project, facts, function, options, f"@{decorator.ref}",
                             (function.qualname,))
                task.origins = origins
                project.tasks.append(task)
                break
    task_classes = _task_classes(project, modules, apps)
    for facts, cls, (options, origins) in task_classes:
        if "run" not in cls.methods:
            continue
        run = next(f for f in facts.functions if f.qualname == f"{cls.name}.run")
        task = _task(project, facts, run, options, f"class {cls.name}({', '.join(cls.bases)})",
                     (f"{cls.name}.run",), short=cls.name, line=cls.line)
        task.origins = dict(origins)
        task.failure_bodies += _failure_bodies(project, facts, cls, task_classes)
        project.tasks.append(task)
    for task in project.tasks:
        base = task.options.get("base")
        if isinstance(base, Ref) and (full := symbols.resolve(task.facts, base.dotted)):
            for facts, cls, (options, origins) in task_classes:
                if f"{facts.module}.{cls.name}".lstrip(".") == full:
                    task.options = {**options, **task.options}
                    task.origins = {**origins, **task.origins}
                    task.failure_bodies += _failure_bodies(project, facts, cls, task_classes)
    for task in project.tasks:
        project.find(FindingKind.TASK, task.short, task.location,
                     f"{task.name}; {task.declared}"
                     + (f"; {_kwargstext(task.options)}" if task.options else ""))


def _task(project: Project, facts: ModuleFacts, function: Function, options: dict[str, object],
          declared: str, bodies: tuple[str, ...], *, short: str | None = None,
          line: int | None = None) -> Task:
    short = short or function.name
    name = options.get("name")
    module = facts.module
    return Task(
        name=name if isinstance(name, str) else f"{module}.{short}".lstrip("."),
        short=short, function=f"{module}.{short}".lstrip("."), facts=facts, bodies=bodies,
        failure_bodies=[], location=Location(facts.path, line or function.line),
        options=options, declared=declared, idempotent=function.idempotent)


def _task_classes(project: Project, modules: list[ModuleFacts],
                  apps: set[str]) -> list[tuple[ModuleFacts, ClassDef, _Options]]:
    """Classes that subclass Celery's Task (directly or through the project's own base),
    with the options their class attributes set, the base's first."""
    symbols = project.symbols
    known: dict[str, tuple[ModuleFacts, ClassDef, _Options]] = {}
    changed = True
    while changed:
        changed = False
        for facts in modules:
            for cls in facts.classes:
                full = f"{facts.module}.{cls.name}".lstrip(".")
                if full in known:
                    continue
                for base in cls.bases:
                    inherited: _Options | None = None
                    if symbols.qualify(facts, base) in _TASK_BASES or (
                            base.endswith(".Task") and _is_app(symbols, facts, base[:-5], apps)):
                        inherited = {}, {}
                    elif (parent := symbols.resolve(facts, base)) in known:
                        inherited = known[parent][2]
                    if inherited is not None:
                        options = {k: v for k, v in cls.attrs.items() if not k.startswith("_")}
                        here = dict.fromkeys(options, Location(facts.path, cls.line))
                        known[full] = (facts, cls, ({**inherited[0], **options},
                                                    {**inherited[1], **here}))
                        changed = True
                        break
    return list(known.values())


def _failure_bodies(project: Project, facts: ModuleFacts, cls: ClassDef,
                    classes: list[tuple[ModuleFacts, ClassDef, _Options]]
                    ) -> list[tuple[ModuleFacts, str]]:
    """`on_failure` of the class and of the project's task classes it derives from."""
    bodies = [(facts, f"{cls.name}.on_failure")] if "on_failure" in cls.methods else []
    for base in cls.bases:
        parent = project.symbols.resolve(facts, base)
        for owner, other, _ in classes:
            if f"{owner.module}.{other.name}".lstrip(".") == parent and other is not cls:
                bodies += _failure_bodies(project, owner, other, classes)
    return bodies


# -------------------------------------------------------------------------- calls


def _calls(project: Project, facts: ModuleFacts) -> None:
    for call in facts.calls:
        caller = project.task_of_body(facts, call.function)
        where = Location(facts.path, call.line)
        if call.method == "retry" and caller is not None and call.base in ("self", caller.short):
            delay = seconds(call.kwargs.get("countdown"))
            project.retries.append((caller, delay, where))
            continue
        if call.method in _LAUNCH and call.base and not call.table:
            task = project.task(project.symbols.resolve(facts, call.base))
            if task is not None:
                _launch(project, task, where, call, f".{call.method}", caller)
            continue
        if call.method == "send_task" or (call.func or "").endswith("send_task"):
            _send_task(project, facts, call, where, caller)
            continue
        if call.table and call.method in (*_LAUNCH, "s", "si"):
            _table_dispatch(project, facts, call, where, caller)
            continue
        for arg in call.positional:
            if not isinstance(arg, Ref):
                continue
            ref = arg.dotted
            target = ref.rsplit(".", 1)[0] if ref.rsplit(".", 1)[-1] in _LAUNCH else ref
            task = project.task(project.symbols.resolve(facts, target))
            if task is not None and call.func:
                _launch(project, task, where, call, f"through {call.func}(...)", caller)


def _launch(project: Project, task: Task, where: Location, call: Call, how: str,
            caller: Task | None) -> None:
    delay = seconds(call.kwargs.get("countdown"))
    if call.eta_seconds is not None:
        delay = max(delay or 0.0, call.eta_seconds)
    project.launches.append(Launch(task, where, how, delay, caller))
    if caller is not None and caller is not task:
        project.edges.append((caller, task, where))
    timing = ""
    if "countdown" in call.kwargs:
        timing = f"; countdown={text(call.kwargs['countdown'])}"
    if "eta" in call.kwargs:
        timing += f"; eta in {call.eta_seconds:g} s" if call.eta_seconds is not None else (
            "; eta (not known statically)")
    origin = f" from task {caller.short}" if caller else (
        f" from {call.function}()" if call.function else "")
    project.find(FindingKind.CALL, task.short, where, f"{how}{origin}{timing}")


def _send_task(project: Project, facts: ModuleFacts, call: Call, where: Location,
               caller: Task | None) -> None:
    name = call.positional[0] if call.positional else call.kwargs.get("name")
    if not isinstance(name, str):
        project.skipped.append(Skipped(where, f"send_task with a dynamic task name "
                                              f"({text(name)}): not linked to a task"))
        return
    task = project.task_named(name)
    if task is None:
        project.find(FindingKind.CALL, name, where, "send_task to a task not in this code")
        return
    _launch(project, task, where, call, "send_task", caller)


def _table_dispatch(project: Project, facts: ModuleFacts, call: Call, where: Location,
                    caller: Task | None) -> None:
    full = project.symbols.resolve(facts, call.table or "")
    owner = project.symbols.defined.get(full) if full else None
    table = next((t for t in owner.tables if f"{owner.module}.{t[0]}".lstrip(".") == full),
                 None) if owner else None
    if owner is None or table is None:
        project.skipped.append(Skipped(where, f"tasks looked up in {call.table}, which is not "
                                              "a dict literal in this code: not linked"))
        return
    tasks = [t for t in (project.task(project.symbols.resolve(owner, ref))
                         for ref in table[1].values()) if t]
    for task in tasks:
        _launch(project, task, where, call, f"looked up in {call.table}", caller)
    if tasks and not any(f.kind == FindingKind.TASK_TABLE and f.name == table[0]
                         for f in project.findings):
        project.find(FindingKind.TASK_TABLE, table[0], Location(owner.path, table[2]),
                     ", ".join(f"{key} -> {ref}" for key, ref in table[1].items()))


# -------------------------------------------------------------------------- canvas


def _canvases(project: Project, facts: ModuleFacts) -> None:
    for canvas, function in facts.canvases:
        caller = project.task_of_body(facts, function)
        where = Location(facts.path, canvas.line)
        started = Location(facts.path, canvas.launched_at or canvas.line)
        firsts, _ = _walk(project, facts, canvas)
        delay = seconds(canvas.launch.get("countdown"))
        if canvas.eta_seconds is not None:
            delay = max(delay or 0.0, canvas.eta_seconds)
        for task in firsts:
            project.launches.append(Launch(task, started, f"{canvas.kind} start", delay, caller))
            if caller is not None and caller is not task:
                project.edges.append((caller, task, started))
        members = [t for t in (_sig_task(project, facts, s) for s in canvas.sigs()) if t]
        if members:
            project.together.append(members)
        handlers = [t.short for t in (_sig_task(project, facts, s) for s in _errors(canvas)) if t]
        detail = _describe(project, facts, canvas)
        if handlers:
            detail += f"; link_error -> {', '.join(handlers)}"
        if delay:
            detail += f"; starts after {delay:g} s"
        project.find(FindingKind.CANVAS, canvas.kind, where, detail)


def _errors(canvas: Canvas) -> list[Sig]:
    found = list(canvas.errors)
    for part in [*canvas.parts, *([canvas.body] if canvas.body else [])]:
        found += _errors(part)
    return found


def _sig_task(project: Project, facts: ModuleFacts, sig: Sig) -> Task | None:
    if sig.ref is not None:
        return project.task(project.symbols.resolve(facts, sig.ref))
    if sig.name is not None:
        return project.task_named(sig.name)
    return None


def _walk(project: Project, facts: ModuleFacts, canvas: Canvas) -> tuple[list[Task], list[Task]]:
    """Link the tasks of a canvas in the order it runs them: (first tasks, last tasks)."""
    where = Location(facts.path, canvas.line)
    firsts: list[Task] = []
    lasts: list[Task] = []
    if canvas.kind == "sig" and canvas.sig is not None:
        task = _sig_task(project, facts, canvas.sig)
        if task is None and canvas.sig.name is None and (
                canvas.sig.dynamic or canvas.sig.ref is None):
            project.skipped.append(Skipped(Location(facts.path, canvas.sig.line),
                                           f"dynamic task name in {canvas.sig.text}: "
                                           "not linked to a task"))
        firsts = lasts = [task] if task else []
    elif canvas.kind == "chain":
        previous: list[Task] = []
        for index, part in enumerate(canvas.parts):
            part_firsts, part_lasts = _walk(project, facts, part)
            for before in previous:
                for after in part_firsts:
                    project.edges.append((before, after, where))
            if index == 0:
                firsts = part_firsts
            previous = part_lasts or previous
        lasts = previous
    else:
        for part in canvas.parts:
            part_firsts, part_lasts = _walk(project, facts, part)
            firsts += part_firsts
            lasts += part_lasts
        if canvas.body is not None:
            body_firsts, body_lasts = _walk(project, facts, canvas.body)
            for before in lasts:
                for after in body_firsts:
                    project.edges.append((before, after, where))
            lasts = body_lasts
    for sig in canvas.errors:
        handler = _sig_task(project, facts, sig)
        if handler is None:
            continue
        for member in _members(project, facts, canvas):
            project.error_edges.append((member, handler, Location(facts.path, sig.line)))
    return firsts, lasts


def _members(project: Project, facts: ModuleFacts, canvas: Canvas) -> list[Task]:
    return [t for t in (_sig_task(project, facts, s) for s in canvas.sigs()) if t]


def _describe(project: Project, facts: ModuleFacts, canvas: Canvas) -> str:
    def name(sig: Sig) -> str:
        task = _sig_task(project, facts, sig)
        return task.short if task else (sig.name or sig.ref or "?")

    if canvas.kind == "sig" and canvas.sig:
        return name(canvas.sig)
    inner = ", ".join(_describe(project, facts, p) for p in canvas.parts)
    if canvas.kind == "chain":
        inner = " -> ".join(_describe(project, facts, p) for p in canvas.parts)
    text = f"{canvas.kind}({inner})" if canvas.kind != "chain" or len(canvas.parts) != 1 else inner
    if canvas.body is not None:
        text += f" then {_describe(project, facts, canvas.body)}"
    return text


# -------------------------------------------------------------------------- beat, state


def _beat(project: Project, modules: list[ModuleFacts]) -> None:
    for facts in modules:
        for entry in facts.beat:
            where = Location(facts.path, entry.line)
            task: Task | None = None
            if isinstance(entry.task, str):
                task = project.task_named(entry.task)
            elif isinstance(entry.task, Ref):
                task = project.task(project.symbols.resolve(facts, entry.task.dotted))
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
            task = project.task_of_body(facts, query.function)
            if task is not None and id(task) in swept:
                where = Location(facts.path, query.line)
                project.sweeps.append((task, query, where))
                project.find(FindingKind.STATE_SWEEP, task.short, where,
                             f"periodic query of rows with {query.field} = {query.value}")


def _state(project: Project, facts: ModuleFacts) -> None:
    for write in facts.status_writes:
        task = project.task_of_body(facts, write.function)
        if task is not None:
            where = Location(facts.path, write.line)
            project.status_writes.append((task, write, where))
            project.find(FindingKind.STATUS_WRITE, task.short, where,
                         f"{write.field} = {write.value}")
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
            for call in facts.calls:
                if call.function != body or not call.func:
                    continue
                last = call.func.rsplit(".", 1)[-1]
                if not _COMPENSATION.search(last) or last in _CELERY_METHODS:
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
    symbols = project.symbols
    for function in facts.functions:
        for decorator in function.decorators:
            ref = decorator.ref or ""
            if symbols.qualify(facts, ref) in ("temporalio.activity.defn", "activity.defn"):
                where = Location(facts.path, function.line)
                project.workflows.append((f"Temporal activity {function.name}",
                                          f"{facts.module}.{function.qualname}".lstrip("."),
                                          where))
                project.find(FindingKind.WORKFLOW, function.name, where, "Temporal activity")
    if not any(target.startswith("langgraph") for target in facts.imports.values()):
        return
    for call in facts.calls:
        if call.method != "add_node":
            continue
        for arg in call.positional:
            if isinstance(arg, Ref) and (full := symbols.resolve(facts, arg.dotted)):
                where = Location(facts.path, call.line)
                name = full.rsplit(".", 1)[-1]
                project.workflows.append((f"LangGraph node {name}", full, where))
                project.find(FindingKind.WORKFLOW, name, where, "LangGraph node")


def crash_prone(project: Project, task: Task) -> Location | None:
    """Where a task calls something that can end its pool process (exit, kill, native code)."""
    for body in task.bodies:
        for call in task.facts.calls:
            if call.function != body or not call.func:
                continue
            qualified = project.symbols.qualify(task.facts, call.func)
            if qualified in _CRASHERS or qualified.split(".")[0] in _CRASHING_MODULES:
                return Location(task.facts.path, call.line)
    return None


def human_wait(project: Project, tasks: list[Task]) -> tuple[Location, str, Task] | None:
    """A state that waits for a person (awaiting approval, pending review) in these tasks:
    where, what, and the task that puts rows in it (or sweeps it, if none does)."""
    members = {id(t) for t in tasks}
    for task, state, where in [*project.status_writes, *project.sweeps]:
        if id(task) in members and _HUMAN.search(state.value):
            return where, f"{state.field} {state.value}", task
    return None


# -------------------------------------------------------------------------- settings


def _settings_findings(project: Project) -> None:
    for value in project.settings.values:
        project.find(FindingKind.SETTING, value.key, value.location,
                     f"{value.written} = {text(value.value)}")
    included = [v for v in project.settings.values if v.key in ("include", "imports")]
    for setting in included:
        names = setting.value if isinstance(setting.value, tuple) else (setting.value,)
        for name in names:
            if isinstance(name, str) and project.symbols.module(name) is None:
                project.skipped.append(Skipped(
                    setting.location, f"{setting.key} names module {name!r}, which is not "
                                      "under the inventory's root: its tasks are not read"))


def text(value: object) -> str:
    """A value as the code wrote it, for reports."""
    if isinstance(value, Ref | Unknown | Schedule | FromEnv):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _kwargstext(kwargs: dict[str, object]) -> str:
    return ", ".join(f"{k}={text(v)}" for k, v in kwargs.items())
