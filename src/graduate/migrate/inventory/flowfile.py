"""A flow definition (TOML, the layout `graduate.flow.load_flow` reads) for a found flow,
so that a spike starts from the team's real steps, timeouts, retries and compensations.

The approval, reversibility and sensitivity classes cannot be read from code; the file
says so and carries placeholders that the team must confirm before the spike.
"""

from __future__ import annotations

import json
import re

from graduate.flow import DEFAULT_IDEMPOTENCY_KEY
from graduate.migrate.inventory.flows import fit_name
from graduate.migrate.inventory.model import FlowCandidate, FlowStep, Inventory

# Celery's retry_backoff_max default, 10 minutes (docs.celeryq.dev/en/stable/userguide/tasks.html).
_BACKOFF_MAX = 600.0
_DEFAULT_TIMEOUT = 30.0
_DEADLINE = "72h"  # the Dealix default for a human decision (partner approval)
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def flow_toml(found: Inventory, flow: FlowCandidate) -> str:
    """The TOML text of `flow`, ready for `graduate flows` and `graduate matrix`."""
    # A flow made only of a sweep (or of handlers) still needs steps: they are its work.
    steps = [s for s in flow.steps if s.role == "step"] or list(flow.steps)
    names = [s.task for s in steps]
    wait_after = (flow.wait_after if flow.wait_after in names else names[0]) if (
        flow.wait_after) else None
    lines = [
        f"# Written by `graduate inventory {found.root} --flow {flow.name}`.",
        f"# Entry: task {flow.entry} ({flow.location}); recommendation: {flow.recommendation}"
        f" ({flow.classification}).",
        "# Steps, timeouts, retries, delays and compensations are read from the code.",
        "# The three classes cannot be: set them from your approval policy before a spike.",
        "",
        "[flow]",
        f"name = {_s(flow.name)}",
        "version = 1",
        f"description = {_s(_description(flow))}",
        'approval_class = "A1"  # placeholder: who must approve (A0-A3)',
        f"reversibility_class = {_s('R2' if wait_after else 'R1')}"
        "  # placeholder: R2/R3 need a human wait first",
        'sensitivity_class = "S1"  # placeholder: how sensitive its data is (S0-S3)',
        f"idempotency_key = {_s(DEFAULT_IDEMPOTENCY_KEY)}",
        "",
    ]
    for system, honoured in _systems(steps):
        note = "" if honoured else "  # no idempotency key found in the tasks that call it"
        lines += [f"[systems.{system}]", f"honours_idempotency = {str(honoured).lower()}{note}",
                  ""]
    others = [s for s in flow.steps if s not in steps]
    if others:
        lines += [f"# Not steps: {s.task} ({s.role}, {s.location})" for s in others]
        lines += ["# A sweep becomes the wait's deadline or a timer; a handler, a compensation.",
                  ""]
    for step in steps:
        name = _name(step.task)
        if step.delay_before:
            lines += ["[[nodes]]", f"timer = {_s(fit_name(f'before_{name}'))}",
                      f"duration = {_s(_seconds(step.delay_before))}"
                      "  # countdown/ETA in the code; shorten it for a spike", ""]
        lines += _step(step, name)
        if wait_after == step.task:
            lines += ["[[nodes]]", f"wait = {_s('decision')}", f"signal = {_s('decision')}",
                      f"deadline = {_s(_DEADLINE)}"
                      "  # the code sweeps a waiting state; set its real deadline",
                      'on_timeout = "compensate"', 'on_reject = "compensate"',
                      "# How the people involved are told that it ended: nothing in the code "
                      "says which task does it.",
                      '# notices = { rejected = "SYSTEM.OPERATION", expired = '
                      '"SYSTEM.OPERATION" }  # each sent once, after the compensations', ""]
    compensations = [(s, s.compensation) for s in steps if s.compensation]
    if compensations:
        lines.append("[compensations]")
        lines += [f"{_name(s.task)} = {_s(c)}" for s, c in compensations if c]
        lines.append("")
    return "\n".join(lines)


def _step(step: FlowStep, name: str) -> list[str]:
    delay = step.retry_delay or 1.0
    maximum = max(_BACKOFF_MAX, delay) if step.backoff else delay
    retry = (f"{{ max_attempts = {step.max_attempts}, initial_interval = {_s(_seconds(delay))}, "
             f"backoff_coefficient = {2.0 if step.backoff else 1.0}, "
             f"maximum_interval = {_s(_seconds(maximum))} }}")
    return ["[[nodes]]", f"step = {_s(name)}",
            f"effect = {_s(step.effect)}  # task {step.task} ({step.location})",
            f"timeout = {_s(_seconds(step.timeout or _DEFAULT_TIMEOUT))}",
            f"retry = {retry}", ""]


def _systems(steps: list[FlowStep]) -> list[tuple[str, bool]]:
    honoured: dict[str, bool] = {}
    for step in steps:
        for effect in (step.effect, step.compensation):
            if effect:
                system = effect.split(".")[0]
                honoured[system] = honoured.get(system, True) and step.idempotent
    return sorted(honoured.items())


def _description(flow: FlowCandidate) -> str:
    steps = " -> ".join(s.task for s in flow.steps)
    return f"Found by graduate inventory: {steps}"


def _name(text: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", text).lower()
    name = _NOT_NAME.sub("_", snake).strip("_") or "step"
    return fit_name(name if name[0].isalpha() else f"step_{name}")


def _seconds(value: float) -> str:
    return f"{int(value)}s" if float(value).is_integer() else f"{value:.3f}s"


def _s(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)
