"""Which functions and classes are Celery tasks, and with which options, however they
are declared: `@app.task`, `@shared_task`, `@celery.task`, a `Task` subclass with `run`,
or the project's own decorator that calls one of these (found to a fixed point).
"""

from __future__ import annotations

from graduate.migrate.inventory.config import celery_apps
from graduate.migrate.inventory.model import FindingKind, Location
from graduate.migrate.inventory.project import Project, Task, kwargs_text, text
from graduate.migrate.inventory.reader import ClassDef, Function, ModuleFacts
from graduate.migrate.inventory.symbols import Symbols
from graduate.migrate.inventory.values import Ref

_TASK_DECORATORS = frozenset({"celery.shared_task", "celery.task", "celery.decorators.task",
                              "celery.task.task",  # Celery 3: `from celery.task import task`
                              "celery.app.shared_task", "celery.current_app.task",
                              "celery.task.periodic_task", "celery.decorators.periodic_task"})
# An app's methods that make a task: `task`, and Celery 3's `periodic_task`, which apps
# of their own keep (indico's `@celery.periodic_task(run_every=...)`).
_APP_TASK_METHODS = ("task", "periodic_task")
_TASK_BASES = frozenset({"celery.Task", "celery.app.task.Task", "celery.task.Task"})
_APP_NAMES = frozenset({"app", "celery", "celery_app", "capp"})


def _apps(project: Project, modules: list[ModuleFacts]) -> dict[str, object]:
    """Every app, each with its `task_cls` option (None when it sets none)."""
    apps: dict[str, object] = {}
    for app in celery_apps(modules, project.symbols):
        apps[app.name] = app.options.get("task_cls")
        made = ""
        if app.factory:
            made = f"made by {app.factory} at {app.built_at}"
        elif app.subclass:
            made = f"made from {app.subclass}, the project's subclass of Celery"
        elif app.recognised_by:
            made = ("its class is not named in the code; recognised as a Celery app by its "
                    "use: " + ", ".join(app.recognised_by))
        project.find(FindingKind.APP, app.name.rsplit(".", 1)[-1],
                     Location(app.facts.path, app.line),
                     "; ".join(t for t in (made, kwargs_text(app.options)) if t))
    for facts in modules:
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


def _app_of(symbols: Symbols, facts: ModuleFacts, ref: str | None, apps: set[str],
            attribute: str) -> str | None:
    """The app of `app.task` or `app.Task` (`attribute`), when it is one of the apps."""
    if not ref or not ref.endswith(f".{attribute}"):
        return None
    found = symbols.resolve(facts, ref[: -len(attribute) - 1])
    return found if found in apps else None


def _task_decorator(symbols: Symbols, facts: ModuleFacts, ref: str | None, apps: set[str],
                    decorators: dict[str, _Options], senders: bool = False) -> _Options | None:
    """The options a decorator gives a task, or None if it does not make one. `senders`:
    the decorator is inside a handler of a Celery signal, whose `sender` is the app."""
    if ref is None:
        return None
    qualified = symbols.qualify(facts, ref)
    if qualified in _TASK_DECORATORS:
        return {}, {}
    head, _, method = ref.rpartition(".")
    if head and method in _APP_TASK_METHODS and (
            _is_app(symbols, facts, head, apps) or (senders and head == "sender")):
        return {}, {}
    found = symbols.resolve(facts, ref)
    if found in decorators:
        options, origins = decorators[found]
        return dict(options), dict(origins)
    return None


def _in_signal_handler(facts: ModuleFacts, function: Function) -> bool:
    """Whether a task is made inside a handler of a Celery signal
    (`@app.on_after_configure.connect def setup(sender, **kwargs): @sender.task ...`)."""
    if function.nested_in is None:
        return False
    handler = facts.function(function.nested_in)
    return handler is not None and "sender" in handler.bound and any(
        (d.ref or "").endswith(".connect") for d in handler.decorators)


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
                for _, call in facts.calls_in(function.qualname):
                    made = _task_decorator(symbols, facts, call.func, apps, found)
                    if made is not None:
                        where = Location(facts.path, call.line)
                        found[full] = ({**made[0], **call.kwargs},
                                       {**made[1], **dict.fromkeys(call.kwargs, where)})
                        changed = True
                        break
    return found


def _tasks(project: Project, modules: list[ModuleFacts], apps: set[str],
           decorators: dict[str, _Options], task_cls: dict[str, object]) -> None:
    symbols = project.symbols
    for facts in modules:
        for function in facts.functions:
            if "." in function.qualname and function.nested_in is None:
                continue  # a method: a task class's, below
            senders = _in_signal_handler(facts, function)
            for decorator in function.decorators:
                made = _task_decorator(symbols, facts, decorator.ref, apps, decorators, senders)
                if made is None:
                    continue
                options, origins = made
                options.update(decorator.kwargs)
                origins.update(dict.fromkeys(decorator.kwargs, Location(facts.path,
                                                                         decorator.line)))
                inside = f" inside {function.nested_in}()" if function.nested_in else ""
                task = _task(project, facts, function, options, f"@{decorator.ref}{inside}",
                             (function.qualname,))
                task.origins = origins
                task.app = _app_of(symbols, facts, decorator.ref, apps,
                                   (decorator.ref or "").rpartition(".")[2])
                project.tasks.append(task)
                break
    _registered(project, modules, apps, decorators)
    task_classes = _task_classes(project, modules, apps)
    for facts, cls, (options, origins) in task_classes:
        if "run" not in cls.methods:
            continue
        run = facts.function(f"{cls.name}.run")
        if run is None:
            continue
        task = _task(project, facts, run, options, f"class {cls.name}({', '.join(cls.bases)})",
                     (f"{cls.name}.run",), short=cls.name, line=cls.line)
        task.origins = dict(origins)
        task.app = next((a for a in (_app_of(symbols, facts, b, apps, "Task") for b in cls.bases)
                         if a), None)
        task.failure_bodies += _failure_bodies(project, facts, cls, task_classes)
        project.tasks.append(task)
    by_name = {f"{facts.module}.{cls.name}".lstrip("."): (facts, cls, options)
               for facts, cls, options in task_classes}
    for task in project.tasks:
        base = task.options.get("base")
        full = symbols.resolve(task.facts, base.dotted) if isinstance(base, Ref) else None
        if full is None and "." not in task.bodies[0]:
            full = _app_task_cls(symbols, task, task_cls)
        if full in by_name:
            facts, cls, (options, origins) = by_name[full]
            task.options = {**options, **task.options}
            task.origins = {**origins, **task.origins}
            task.failure_bodies += _failure_bodies(project, facts, cls, task_classes)
    for task in project.tasks:
        project.find(FindingKind.TASK, task.short, task.location,
                     f"{task.name}; {task.declared}"
                     + (f"; {kwargs_text(task.options)}" if task.options else ""))


def _app_task_cls(symbols: Symbols, task: Task, task_cls: dict[str, object]) -> str | None:
    """The class a task made by a decorator derives from when its app names one
    (`Celery("saleor", task_cls="saleor.core.tasks:RestrictWriterDBTask")`): the app's
    own, or the only app's for a shared task. Its class attributes are the task's
    defaults (`acks_late = True` there is every such task's)."""
    app = task.app if task.app is not None else (next(iter(task_cls)) if len(task_cls) == 1
                                                else None)
    if app is None:
        return None
    named = task_cls.get(app)
    if isinstance(named, str):
        return symbols.find(named.replace(":", "."))
    owner = symbols.modules.get(app.rpartition(".")[0])  # the module that makes the app
    if isinstance(named, Ref) and owner is not None:
        return symbols.resolve(owner, named.dotted)
    return None


def _registered(project: Project, modules: list[ModuleFacts], apps: set[str],
                decorators: dict[str, _Options]) -> None:
    """Tasks made by calling a decorator on a function: `app.task(name=STEP)(step)`."""
    symbols = project.symbols
    for facts in modules:
        for registration in facts.registrations:
            decorator = registration.decorator
            made = _task_decorator(symbols, facts, decorator.ref, apps, decorators)
            full = symbols.resolve(facts, registration.target)
            if made is None or full is None:
                continue
            owner = symbols.defined[full]
            name = full.rsplit(".", 1)[-1]
            # a function made a task in the function defining it is that one's own
            function = (owner.function(f"{registration.inside}.<locals>.{name}")
                        if owner is facts and registration.inside else None
                        ) or owner.function(name)
            if function is None or project.task_of_body(owner, function.qualname) is not None:
                continue
            options, origins = made
            options.update(decorator.kwargs)
            where = Location(facts.path, decorator.line)
            origins.update(dict.fromkeys(decorator.kwargs, where))
            made_as = (f"{decorator.ref}(...)({registration.target})" if decorator.called
                       else f"{decorator.ref}({registration.target})")
            inside = f" inside {function.nested_in}()" if function.nested_in else ""
            task = _task(project, owner, function, options, f"{made_as} at {where}{inside}",
                         (function.qualname,))
            task.origins = origins
            task.app = _app_of(symbols, facts, decorator.ref, apps, "task")
            project.tasks.append(task)


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
        options=options, declared=declared, idempotent=function.idempotent,
        claim=None if function.claimed_at is None
        else (function.qualname, function.claimed_at))


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


def read_tasks(project: Project, modules: list[ModuleFacts]) -> None:
    """Every app and task of the codebase into `project`, with a finding for each."""
    task_cls = _apps(project, modules)
    apps = set(task_cls)
    _tasks(project, modules, apps, _project_decorators(project.symbols, modules, apps), task_cls)
