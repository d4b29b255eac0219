"""How tasks start one another: `.delay`/`.apply_async`/`send_task` (with countdown and
ETA), the project's dispatch helpers, tasks looked up in a dict, and canvas (chain,
group, chord, `|`, link, link_error), each linked into the call graph.
"""

from __future__ import annotations

from graduate.migrate.inventory.model import FindingKind, Location, Skipped
from graduate.migrate.inventory.project import INLINE, Launch, Project, Task, text
from graduate.migrate.inventory.reader import Call, Canvas, ModuleFacts, Sig, makes_tasks
from graduate.migrate.inventory.values import Ref, seconds

_LAUNCH = frozenset({"delay", "apply_async"})


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
        if call.dynamic_base is not None:
            project.skipped.append(Skipped(where, f"a task reached through {call.dynamic_base}, "
                                                  "known only at run time: not linked to a task"))
            continue
        if call.method == "send_task" or call.func == "send_task":
            _send_task(project, facts, call, where, caller)
            continue
        if call.table and call.method in (*_LAUNCH, "s", "si"):
            _table_dispatch(project, facts, call, where, caller)
            continue
        if caller is not None and (inline := _inline(project, facts, call)) is not None:
            _launch(project, inline, where, call, INLINE, caller)
            continue
        if makes_tasks(call.func):
            continue  # `app.task(fn)` makes a task of fn; it starts nothing
        for arg in call.positional:
            if not isinstance(arg, Ref):
                continue
            ref = arg.dotted
            launcher = ref.rsplit(".", 1)[-1] in _LAUNCH  # `on_commit(notify.delay)`
            target = ref.rsplit(".", 1)[0] if launcher else ref
            task = project.task(project.symbols.resolve(facts, target))
            func = call.func or ""
            library = func.partition(".")[0] in facts.imports and not (
                project.symbols.is_project(qualified := project.symbols.qualify(facts, func)))
            if not launcher and library and qualified != "functools.partial":
                # A task handed to a library (`transaction.atomic(task)`) is wrapped, not
                # run; `partial(task, x)` (Weblate's on_commit) is a call bound for later.
                continue
            if task is not None and call.func:
                _launch(project, task, where, call, f"through {call.func}(...)", caller)


def _inline(project: Project, facts: ModuleFacts, call: Call) -> Task | None:
    """The task a task runs in its own process: `notify(x)`, `notify.apply(...)`,
    `notify.run(x)`. A task class called (`Export()`) is made, not run."""
    if call.method in ("apply", "run") and call.base:
        target = call.base
    elif call.func:
        target = call.func
    else:
        return None
    task = project.task(project.symbols.resolve(facts, target))
    return task if task is not None and "." not in task.bodies[0] else None


def _launch(project: Project, task: Task, where: Location, call: Call, how: str,
            caller: Task | None) -> None:
    delay = seconds(call.kwargs.get("countdown"))
    if call.eta_seconds is not None:
        delay = max(delay or 0.0, call.eta_seconds)
    unknown = None
    if "countdown" in call.kwargs and seconds(call.kwargs["countdown"]) is None:
        unknown = f"countdown={text(call.kwargs['countdown'])}"
    elif "eta" in call.kwargs and call.eta_seconds is None:
        unknown = f"eta={text(call.kwargs['eta'])}"
    project.launches.append(Launch(task, where, how, delay, caller, unknown))
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
        # A single signature is a canvas only for its error handlers: `charge.s().on_error(...)`
        name = "link_error" if canvas.kind == "sig" else canvas.kind
        project.find(FindingKind.CANVAS, name, where, detail)


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


def read_starts(project: Project, facts: ModuleFacts) -> None:
    """How the tasks of one module are started: call sites and canvas."""
    _calls(project, facts)
    _canvases(project, facts)
