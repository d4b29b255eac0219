"""`graduate scaffold`: a flow definition rendered as the Temporal package an expert writes.

The package holds the workflow (dataclass inputs, explicit timeouts and retry policies,
idempotency keys passed to the activities, compensation in reverse, signals with
deadlines), the activities (each effect in `graduate.effect`), the external calls for
the team to fill in, a worker entry point, a `pyproject.toml` that declares the app for
graduate, and a test that runs it on a dev server. The templates are package data
(`migrate/templates/scaffold/`).

What was generated is recorded, with a digest of each file, in `MANIFEST`: a later run
rewrites a file only while it is as generated, and refuses (naming the files) when
someone edited it, unless forced.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import jinja2

from graduate.errors import ConfigError
from graduate.flow import (
    INTERRUPT_NOTICE,
    WAIT_ENDS,
    Flow,
    Parallel,
    Step,
    Timer,
    Wait,
    WaitEnd,
    WhileOpen,
    flow_to_dict,
)

MANIFEST = ".graduate-scaffold.json"
MANIFEST_VERSION = 1
# The heartbeat timeout of a step with work: a worker killed while the step works is
# found out within it (not at the step's start-to-close timeout), however long the work.
WORK_HEARTBEAT_TIMEOUT = 10.0
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("graduate.migrate", "templates/scaffold"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # the output is Python and TOML, not HTML
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["py"] = lambda value: (
    json.dumps(value) if isinstance(value, str) else repr(value))  # a Python literal


def _wrap(text: str, indent: str = "", first: str | None = None) -> str:
    """Prose for a docstring or comment, in lines that ruff's line length takes."""
    return textwrap.fill(str(text), width=88, initial_indent=indent if first is None else first,
                         subsequent_indent=indent, break_on_hyphens=False)


_TEMPLATES.filters["wrap"] = _wrap
_TEMPLATES.filters["tq"] = lambda value: json.dumps(str(value))  # a TOML basic string


class ScaffoldConflict(ConfigError):
    """Generated files were edited since they were generated (or were never generated)."""

    def __init__(self, out: Path, files: Sequence[str]) -> None:
        self.files = tuple(files)
        super().__init__(
            f"{out} holds {len(files)} file(s) that scaffold would overwrite and that were "
            f"edited since it generated them (or that it did not write): "
            f"{', '.join(files)}. Keep your edits (give another --out), or regenerate over "
            "them with --force")


@dataclass(frozen=True)
class Scaffolded:
    """What `scaffold` wrote: the package's name, the app it declares, every file."""

    out: Path
    package: str
    app: str
    written: tuple[str, ...]  # relative to `out`
    unchanged: tuple[str, ...]  # already as generated


def scaffold(flow: Flow, out: Path, *, force: bool = False) -> Scaffolded:
    """Write the Temporal package for `flow` into `out` (created if need be).

    Refuses with ScaffoldConflict, before writing anything, when a file it would write
    exists and is not as this tool last generated it, unless `force`.
    """
    files = render(flow)
    previous = _read_manifest(out)
    conflicts = []
    for name, text in files.items():
        path = out / name
        if not path.exists() or force:
            continue
        current = _digest(path.read_bytes())
        if current != previous.get(name) and current != _digest(text.encode()):
            conflicts.append(name)
    if conflicts:
        raise ScaffoldConflict(out, conflicts)
    written, unchanged = [], []
    try:
        for name, text in files.items():
            path = out / name
            if path.exists() and path.read_text(encoding="utf-8") == text:
                unchanged.append(name)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(name)
        manifest = {"version": MANIFEST_VERSION, "flow": flow.name,
                    "files": {name: _digest(text.encode()) for name, text in files.items()}}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--out {out} cannot be written ({error.strerror}); give a folder "
                          "you can write to") from error
    names = _names(flow)
    return Scaffolded(out=out, package=names["package"], app=names["app"],
                      written=tuple(written), unchanged=tuple(unchanged))


def render(flow: Flow) -> dict[str, str]:
    """Every file of the package for `flow`, by its path relative to the output folder."""
    context = _context(flow)
    package = context["package"]
    files = {
        f"{package}/__init__.py": _wrap(f'"""{context["title"]} on Temporal, scaffolded by '
                                        f'graduate from flow {flow.name}."""') + "\n",
        f"{package}/workflow.py": _TEMPLATES.get_template("workflow.py.j2").render(context),
        f"{package}/activities.py": _TEMPLATES.get_template("activities.py.j2").render(context),
        f"{package}/systems.py": _TEMPLATES.get_template("systems.py.j2").render(context),
        f"{package}/worker.py": _TEMPLATES.get_template("worker.py.j2").render(context),
        f"tests/test_{package}.py": _TEMPLATES.get_template("test.py.j2").render(context),
        "pyproject.toml": _TEMPLATES.get_template("pyproject.toml.j2").render(context),
        f"flows/{flow.name}.toml": _flow_file(flow),
    }
    return files


def _flow_file(flow: Flow) -> str:
    """The flow's own TOML file as written (comments and all), else the flow as TOML."""
    source = Path(flow.source)
    if source.suffix == ".toml" and source.is_file():
        return source.read_text(encoding="utf-8")
    return flow_toml(flow)


def flow_toml(flow: Flow) -> str:
    """The flow as TOML, in the layout `graduate.flow.load_flow` reads: the package's own
    copy, so that it runs wherever the package goes."""
    data = flow_to_dict(flow)
    lines = [f"# Flow {flow.name}, as `graduate scaffold` generated the package from it.",
             "", "[flow]"]
    lines += [f"{key} = {_toml(value)}" for key, value in data["flow"].items()]
    for system, table in data["systems"].items():
        lines += ["", f"[systems.{system}]",
                  f"honours_idempotency = {_toml(table['honours_idempotency'])}"]
    for node in data["nodes"]:
        lines += ["", "[[nodes]]"]
        lines += [f"{key} = {_toml(value)}" for key, value in node.items() if key != "steps"]
        for step in node.get("steps", ()):  # a parallel group's steps, each with its branch
            lines += ["", "  [[nodes.steps]]"]
            lines += [f"  {key} = {_toml(value)}" for key, value in step.items()]
    if "input" in data:
        lines += ["", "[input]"]
        lines += [f"{name} = {json.dumps(items)}" for name, items in data["input"].items()]
    if "interrupt" in data:
        lines += ["", "[interrupt]"]
        lines += [f"{key} = {_toml(value)}" for key, value in data["interrupt"].items()]
    if data["compensations"]:
        lines += ["", "[compensations]"]
        lines += [f"{step} = {_toml(effect)}" for step, effect in data["compensations"].items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _names(flow: Flow) -> dict[str, str]:
    package = f"{flow.name}_temporal"
    return {"package": package, "app": package}


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_") if part)


def _context(flow: Flow) -> dict[str, Any]:
    names = _names(flow)
    steps = [{"name": s.name, "effect": s.effect, "compensation": s.compensation,
              "timeout": s.timeout, "retry": s.retry, "const": s.name.upper(),
              "work": s.work, "heartbeat": WORK_HEARTBEAT_TIMEOUT if s.work else None}
             for s in flow.steps]
    waits = [{"name": w.name, "signal": w.signal, "deadline": w.deadline,
              "field": f"{w.name}_deadline_seconds", "method": f"on_{_identifier(w.signal)}"}
             for w in flow.waits]
    unkeyed = sorted(s.name for s in flow.systems if not s.honours_idempotency)
    works = any(s.work for s in flow.steps)
    sends = [_send(w, send) for w in flow.waits for send in w.while_open]
    interrupt = _interrupt(flow)
    timers = any(isinstance(n, Timer) for n in flow.nodes)
    notices = [_notice(w, end) for w in flow.waits for end in WAIT_ENDS
               if w.notice_step(end) is not None]
    # A for_each step runs as a parallel group built at run time, one branch per item of
    # the workflow's input: the same code as a declared group's.
    groups = bool(flow.groups) or flow.expanded
    inputs = [{"name": spec.name, "default": json.dumps(list(spec.default))}
              for spec in flow.inputs]
    return {
        **names,
        "flow": flow,
        "title": flow.name.replace("_", " ").capitalize(),
        "workflow_class": _camel(flow.name) + "Workflow",
        "input_class": _camel(flow.name) + "Input",
        "distribution": names["package"].replace("_", "-"),
        "task_queue": flow.name.replace("_", "-"),
        "task_queue_variable": f"{flow.name.upper()}_TASK_QUEUE",
        "steps": steps,
        "waits": waits,
        "sends": sends,
        "notices": notices,
        "interrupt": interrupt,
        "notifies": bool(notices) or bool(interrupt and interrupt["notice"]),
        "timers": timers,
        "suppresses": bool(sends) or bool(interrupt and timers),  # contextlib.suppress
        "fails": any("fail" in (w.on_timeout, w.on_reject) for w in flow.waits),
        "nodes": [_node(node) for node in flow.nodes],
        "flow_returns": _flow_returns(flow),
        "groups": groups,
        "inputs": inputs,
        "fans": flow.expanded,
        "works": works,
        "calls": _calls(flow),
        "operations": _systems(flow),
        "unkeyed": unkeyed,
        "step_names": [s.name for s in flow.steps],
        "about": " ".join(filter(None, [
            f"Generated by `graduate scaffold` from flow {flow.name} (version {flow.version}).",
            "Each step is an activity with an explicit timeout and retry policy, given the "
            "idempotency key of its effect.",
            "Each wait is a signal awaited with a deadline." if flow.waits else "",
            "A wait's reminder and escalation are each a durable timer racing the signal: "
            "if the wait is still open at its time, its activity runs once, under a key of "
            "its own, and the wait stays open; a wait that ended first sends none."
            if sends else "",
            "A wait rejected or past its deadline compensates, then sends the notice of "
            "that ending once, under a key of its own." if notices else "",
            "The branches of a parallel group run at once and join before the flow goes on; "
            "after a branch fails for good the others start no further step."
            if groups else "",
            "A step run for each item of an input (" + ", ".join(
                f"{s.name} for each of {s.for_each}" for s in flow.steps if s.for_each)
            + ") runs once per item given in the workflow's input, all at once, each under "
            "its own step name (STEP[ITEM]) and so its own idempotency key, and each granted "
            "item is compensated on its own." if flow.expanded else "",
            "A step with long work heartbeats through it, so a worker lost mid-work is found "
            f"out within {WORK_HEARTBEAT_TIMEOUT:g}s." if works else "",
            f"The flow's interrupt ({flow.interrupt.signal}) may come at any point: once it "
            "has, no further step starts, a step in flight finishes, the completed steps are "
            "compensated" + (", then its notice is sent once" if flow.interrupt.notice
                             else "") + "." if flow.interrupt is not None else "",
            f"A step that failed for good{', a rejection, a passed deadline' if flow.waits else ''}"
            " or an operator's cancellation compensates the completed steps"
            f"{' (in every branch)' if groups else ''} in reverse order, each once.",
        ])),
        "activities_about": (
            f"Generated by `graduate scaffold` from flow {flow.name}. Each activity is named "
            "after its effect, gets the idempotency key the workflow made for it, and wraps "
            "its external call in `graduate.effect`: outside a graduate run that only calls "
            "through; under one, each call is recorded in graduate's ledger, so this code can "
            "be crash-tested as it is. Activities are retried (at least once, maybe more): "
            "the key lets the external system absorb a repeat"
            + (f"; by the flow, {', '.join(unkeyed)} honour no key, so a repeat there is "
               "applied again." if unkeyed else ".")),
        "systems_about": (
            "Generated by `graduate scaffold`, once: put your clients' calls here (an HTTP "
            "request, an SDK call). Send the key as the system's idempotency key where it "
            "takes one"
            + (f" (by the flow, none does: {', '.join(unkeyed)})" if unkeyed else "")
            + ". Raise on a failure worth retrying: the activity's retry policy retries it. "
            "These functions do nothing until you fill them in."),
        "body_does": ", ".join(filter(None, [
            "schedules activities", "runs branches as concurrent tasks" if groups else "",
            "waits for signals" if flow.waits else "",
            "races each reminder's and escalation's timer against its signal" if sends else "",
            "sleeps on durable timers" if timers else "",
            "checks a flag its interrupt's signal sets" if interrupt else "",
        ])),
        "first_step": flow.steps[0].name,
    }


def _node(node: Step | Wait | Timer | Parallel) -> dict[str, Any]:
    if isinstance(node, Parallel):
        return {"kind": "group", "name": node.name,
                "branches": [{"name": branch.name, "steps": [_node(s) for s in branch.steps]}
                             for branch in node.branches]}
    if isinstance(node, Step):
        return {"kind": "fanout" if node.for_each else "step", "name": node.name,
                "function": node.name, "const": node.name.upper(),
                "undo": f"compensate_{node.name}" if node.compensation else None,
                "for_each": node.for_each}
    if isinstance(node, Wait):
        var = f"{node.name}_decision"
        branches = []
        if node.on_timeout != "continue":
            branches.append({"test": "is None", "lines": _action(
                node.on_timeout, f"the deadline of {node.name} passed",
                _notice(node, "expired") if node.notice_step("expired") else None)})
        branches.append({"test": '== "reject"', "lines": _action(
            node.on_reject, f"rejected at {node.name}",
            _notice(node, "rejected") if node.notice_step("rejected") else None)})
        return {"kind": "wait", "name": node.name, "signal": node.signal,
                "field": f"{node.name}_deadline_seconds", "var": var, "branches": branches,
                "sends": [_send(node, send) for send in node.while_open]}
    return {"kind": "timer", "name": node.name, "duration": node.duration}


def _send(wait: Wait, send: WhileOpen) -> dict[str, Any]:
    """What a wait sends once while still open (its reminder, its escalation): its step
    (`<wait>.reminder`, `<wait>.escalation`, the name its key and the ledger know it by),
    its activity, its options (one attempt: it is not repeated) and its time as a share
    of the wait's deadline, so that it follows the deadline an instance is given."""
    at = wait.reminder.at if send.kind == "reminder" and wait.reminder else (
        send.after / wait.deadline)
    return {"wait": wait.name, "kind": send.kind, "step": send.step.name,
            "effect": send.step.effect, "at": _share(at),
            "function": _send_function(wait, send),
            "const": f"{wait.name.upper()}_{send.kind.upper()}",
            "timeout": send.step.timeout}


def _share(at: float) -> str:
    """A share of a deadline as a reader would write it: `0.5`, or `1 / 3` for the
    share a week's escalation takes of a three-week deadline, rather than the float's
    seventeen digits (the same float either way)."""
    if len(text := repr(at)) <= 6:
        return text
    fraction = Fraction(at).limit_denominator(1000)
    exact = fraction.numerator / fraction.denominator == at
    return f"{fraction.numerator} / {fraction.denominator}" if exact else text


def _flow_returns(flow: Flow) -> int:
    """How many returns the generated `_flow` holds: one per wait ending that
    compensates (its rejection, its lapse), and its end."""
    return 1 + sum(1 for wait in flow.waits for action in (
        wait.on_reject, None if wait.on_timeout == "continue" else wait.on_timeout)
        if action == "compensate")


def _send_function(wait: Wait, send: WhileOpen) -> str:
    return f"{wait.name}_{send.kind}"


def _interrupt(flow: Flow) -> dict[str, Any] | None:
    """The flow's interrupt: its signal, the handler that records it, how the instance's
    end is worded, and its notice (`interrupt.notice`, retried: it must land)."""
    if flow.interrupt is None:
        return None
    step = flow.interrupt.notice_step
    notice = None if step is None else {
        "step": step.name, "effect": step.effect, "function": INTERRUPT_FUNCTION,
        "const": INTERRUPT_FUNCTION.upper(), "timeout": step.timeout, "retry": step.retry}
    return {"signal": flow.interrupt.signal,
            "method": f"on_{_identifier(flow.interrupt.signal)}",
            "reason": flow.interrupt.reason, "notice": notice}


INTERRUPT_FUNCTION = INTERRUPT_NOTICE.replace(".", "_")  # interrupt_notice


def _notice(wait: Wait, end: WaitEnd) -> dict[str, Any]:
    """A wait's notice of one ending: its step (`<wait>.<end>_notice`, the name its key
    and the ledger know it by), its activity and its options (retried: it must land)."""
    step = wait.notice_step(end)
    assert step is not None
    return {"wait": wait.name, "end": end, "step": step.name, "effect": step.effect,
            "function": _notice_function(wait, end),
            "const": f"{wait.name.upper()}_{end.upper()}_NOTICE",
            "timeout": step.timeout, "retry": step.retry}


def _notice_function(wait: Wait, end: WaitEnd) -> str:
    return f"{wait.name}_{end}_notice"


def _action(action: str, reason: str, notice: dict[str, Any] | None) -> list[str]:
    if action == "fail":
        return [f"raise ApplicationError({json.dumps(reason)}, non_retryable=True)"]
    told = ([f"await self._notice(request, {json.dumps(notice['step'])},",
             f"                   activities.{notice['function']}, {notice['const']})"]
            if notice else [])
    return ["await self._compensate(request)", *told,
            f"return {json.dumps(reason + ': compensated')}"]


def _calls(flow: Flow) -> list[dict[str, Any]]:
    """One activity per effect and per compensation of each step. An activity is named
    after its effect, unless two steps share that effect: then after the step too."""
    sites = [(step, step.effect, step.name, f"The effect of step {step.name}.")
             for step in flow.steps]
    sites += [(step, step.compensation, f"compensate_{step.name}",
               f"Undo step {step.name} (its compensation).")
              for step in flow.steps if step.compensation]
    sites += [(send.step, send.step.effect, _send_function(wait, send),
               f"The {send.kind} of wait {wait.name}: sent once, while it is still open.")
              for wait in flow.waits for send in wait.while_open]
    sites += [(step, step.effect, _notice_function(wait, end),
               f"Tell the parties that wait {wait.name} ended {end}, after the compensations.")
              for wait in flow.waits for end in WAIT_ENDS
              if (step := wait.notice_step(end)) is not None]
    sites += [(step, step.effect, INTERRUPT_FUNCTION,
               f"Tell the parties that {flow.interrupt.signal} interrupted the flow, after "
               "the compensations.")
              for step in flow.interrupt_steps if flow.interrupt is not None]
    shared = {effect for effect in (s[1] for s in sites)
              if sum(1 for other in sites if other[1] == effect) > 1}
    return [{"effect": effect, "activity": f"{effect}@{step.name}" if effect in shared
             else effect, "function": function, "doc": doc, "step": step.name,
             "system_function": effect.replace(".", "_"),
             # A for_each step's calls are recorded under the item's own step name,
             # which the workflow passes (STEP[ITEM]).
             "per_item": step.for_each is not None,
             "heartbeats": function == step.name and step.work > 0}  # the effect's work
            for step, effect, function, doc in sites if effect is not None]


def _systems(flow: Flow) -> list[dict[str, str]]:
    """One function per external operation, however many steps call it."""
    operations = dict.fromkeys(e for s in flow.effect_steps
                               for e in (s.effect, s.compensation) if e)
    work = {s.effect: s.work for s in flow.steps if s.work}
    return [{"name": effect.replace(".", "_"),
             "doc": f"Call {effect.split('.')[0]}: {effect.split('.')[1]} for `entity_id`, "
                    "with `key` as its idempotency key."
                    + (f" By the flow its work takes {work[effect]:g}s: the activity "
                       "heartbeats while it runs." if effect in work else "")}
            for effect in operations]


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_manifest(out: Path) -> dict[str, str]:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a damaged manifest vouches for nothing: every existing file conflicts
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
