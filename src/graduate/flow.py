"""The engine-neutral flow model: steps, waits, timers, compensation and the seed's classes.

A flow is data. It is read from a TOML file in `spikes/` (or built in Python and
referenced as `module:ATTRIBUTE`) and validated as it is loaded, so that an engine
never sees a flow it would have to reject halfway through a run.
"""

from __future__ import annotations

import errno
import functools
import importlib
import json
import math
import os
import re
import secrets
import string
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from graduate.errors import FlowError, GraduateError, InputError
from graduate.files import parse_json, parse_toml, read_text


class ApprovalClass(StrEnum):
    """Who must approve before the execution plane acts (Dealix approval policy)."""

    A0 = "A0"  # none
    A1 = "A1"  # manager or lead
    A2 = "A2"  # function head (+ legal/finance)
    A3 = "A3"  # executive or board


class ReversibilityClass(StrEnum):
    """How hard the flow's effects are to undo. R2 and R3 need a human wait first."""

    R0 = "R0"  # automatic
    R1 = "R1"  # limited ops effort
    R2 = "R2"  # costly or painful
    R3 = "R3"  # irreversible or externally binding (signed terms, money, filings)


class SensitivityClass(StrEnum):
    """How sensitive the data the flow carries is."""

    S0 = "S0"  # public
    S1 = "S1"  # internal
    S2 = "S2"  # confidential or commercial
    S3 = "S3"  # regulated, personal or board


CLASS_MEANINGS: Mapping[str, Mapping[str, str]] = {
    "approval_class": {
        "A0": "no approval",
        "A1": "manager or lead",
        "A2": "function head (+ legal/finance)",
        "A3": "executive or board",
    },
    "reversibility_class": {
        "R0": "reversed automatically",
        "R1": "reversed with limited ops effort",
        "R2": "costly or painful to reverse",
        "R3": "irreversible or externally binding",
    },
    "sensitivity_class": {
        "S0": "public",
        "S1": "internal",
        "S2": "confidential or commercial",
        "S3": "regulated, personal or board",
    },
}

OnTimeout: TypeAlias = Literal["compensate", "fail", "continue"]
OnReject: TypeAlias = Literal["compensate", "fail"]
# How a wait ended other than by an approval: a rejection, or its deadline passing.
WaitEnd: TypeAlias = Literal["rejected", "expired"]
WAIT_ENDS: tuple[WaitEnd, ...] = get_args(WaitEnd)

# Dealix's key format, {tenant_id}:{workflow_type}:{entity_id}:{yyyymmdd}, plus the step,
# so that the key alone tells every call of one instance apart. A key without {step} (the
# Dealix format as written) stays unique per effect because a simulated system, like a
# real API, remembers keys per operation (see `graduate.ledger`); `validate` then refuses
# two calls of one flow to the same operation, which would share a key.
DEFAULT_IDEMPOTENCY_KEY = "{tenant_id}:{flow}:{entity_id}:{date}:{step}"
# `workflow_type` and `yyyymmdd` are the Dealix names of `flow` and `date`.
KEY_ALIASES: Mapping[str, str] = {"workflow_type": "flow", "yyyymmdd": "date"}
KEY_FIELDS = frozenset({"tenant_id", "flow", "entity_id", "date", "step", "instance_id",
                        *KEY_ALIASES})

# A name becomes a Temporal activity and signal name, a Celery task name, a ledger key,
# and a file's name (spikes/NAME.toml, an ADR's): letters a file system and every engine
# take as they are, and no longer than a PostgreSQL identifier or an input item (63).
# Matched whole (fullmatch): `$` would let a trailing newline through.
NAME_LIMIT = 63
_NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{NAME_LIMIT - 1}}}")
NAME_RULE = (f"names are lower-case letters, digits and underscores, 1 to {NAME_LIMIT} of "
             "them, starting with a letter")
_EFFECT = re.compile(rf"{_NAME.pattern}\.{_NAME.pattern}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
# Weeks, for the milestones of a long-lived flow (a six-week review is "6w", not "42d").
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
# Beyond these an engine overflows (Temporal's int32 attempts, datetime's year 9999) or
# a run never ends; no business flow needs more.
MAX_SECONDS = 366 * 86400.0
MAX_ATTEMPTS = 10_000
MAX_BACKOFF = 100.0


@dataclass(frozen=True)
class RetryPolicy:
    """How an engine retries a step whose effect failed transiently."""

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    maximum_interval: float = 30.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        try:
            delay = self.initial_interval * self.backoff_coefficient ** (attempt - 1)
        except OverflowError:  # thousands of attempts: far past the cap
            return float(self.maximum_interval)
        return float(min(delay, self.maximum_interval))


@dataclass(frozen=True)
class Step:
    """One call to an external system, with its retry policy, timeout and compensation."""

    name: str
    effect: str
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensation: str | None = None
    # Seconds the step's work takes before its effect lands (a long computation, a slow
    # API). The step heartbeats through it on Temporal and simply runs long on Celery,
    # so a spike sees how it meets its timeout, heartbeat and visibility timeouts.
    work: float = 0.0
    # The step only reads (a validation, a lookup): it changes nothing outside, so there
    # is nothing to compensate, and a rollback that leaves it applied undoes everything.
    read_only: bool = False
    # The name of a flow input (`[input]`) whose items the step runs for, one call each,
    # at the same time: see `Flow.for_instance`. None for a step that runs once.
    for_each: str | None = None

    @property
    def system(self) -> str:
        return self.effect.split(".", 1)[0]

    def for_item(self, item: str) -> Step:
        """This step as it runs for one item of its `for_each` input: its own name
        (`grant_access[acme]`), so its own idempotency key, ledger rows and
        compensation."""
        return replace(self, name=expanded_name(self.name, item), for_each=None)


def expanded_name(step: str, item: str) -> str:
    """The name of `step` run for `item`: `grant_access[acme]`. Brackets, because no
    declared name can hold them (names are letters, digits and underscores) and a dot
    already marks a wait's sends and a compensation's key (`nda.reminder`,
    `<step>.compensation`)."""
    return f"{step}[{item}]"


def declared_name(step: str) -> str:
    """The declared step behind an expanded name (`grant_access[acme]` is
    `grant_access`); any other name is its own."""
    return step.split("[", 1)[0] if step.endswith("]") else step


@dataclass(frozen=True)
class Reminder:
    """An effect sent once while a wait is still open, at a fraction of its deadline
    (`at = 0.5`: half-way). A fraction, not a duration, so that it follows the deadline
    wherever the deadline goes (a time scale, a shortened deadline)."""

    at: float
    effect: str


@dataclass(frozen=True)
class Escalation:
    """An effect sent once if a wait is still open `after` seconds into it: the
    milestone's due date has passed and someone above must be told, while the wait stays
    open for its answer until its hard deadline. A duration, not a fraction like a
    reminder's: a due date is set for itself, not as a share of the deadline."""

    after: float
    effect: str


# What a wait sends, once, if it is still open at the time: its reminder, its escalation.
WhileOpenKind: TypeAlias = Literal["reminder", "escalation"]


@dataclass(frozen=True)
class WhileOpen:
    """One effect a wait sends once if it is still open `after` seconds into it, as a
    step of its own (`<wait>.reminder`, `<wait>.escalation`) that goes through the
    ledger with its own key. Every engine sends, and the checker judges, each alike."""

    kind: WhileOpenKind
    step: Step
    after: float


REMINDER_SUFFIX = ".reminder"
ESCALATION_SUFFIX = ".escalation"
NOTICE_SUFFIX = "_notice"  # `<wait>.rejected_notice`, `<wait>.expired_notice`
# A notice tells people how their case ended: it is retried like any step that must land.
NOTICE_RETRY = RetryPolicy(max_attempts=5, initial_interval=1.0, maximum_interval=10.0)


@dataclass(frozen=True)
class Wait:
    """A wait for a named signal (a human decision) with a deadline.

    The signal's payload carries `{"decision": "approve" | "reject"}`; a reject and a
    passed deadline lead to the configured action. A reminder and an escalation, when
    declared, are each sent once if the wait is still open at their time (see
    `while_open`); the wait stays open after either, until its answer or deadline. A
    notice per ending (`notices`: the effect sent when the wait ended `rejected` or
    `expired`) is sent once, after the compensations that ending runs, as the last call
    of the instance.
    """

    name: str
    signal: str
    deadline: float
    on_timeout: OnTimeout = "compensate"
    on_reject: OnReject = "compensate"
    reminder: Reminder | None = None
    # (ending, effect) pairs: a tuple, so that a wait (and its flow) stays hashable.
    notices: tuple[tuple[WaitEnd, str], ...] = ()
    escalation: Escalation | None = None

    def with_deadline(self, deadline: float) -> Wait:
        """This wait lasting `deadline` seconds (a time scale, a run's --wait-deadline).
        Its escalation keeps its share of the deadline, as a reminder's fraction does,
        so that it still comes before the deadline."""
        if self.escalation is None:
            return replace(self, deadline=deadline)
        after = self.escalation.after * deadline / self.deadline
        return replace(self, deadline=deadline,
                       escalation=replace(self.escalation, after=after))

    def reason(self, end: WaitEnd) -> str:
        """How an engine words the end of an instance that ended here this way: the one
        wording every engine reports, so the checker reads the ending from the engine."""
        return f"rejected at {self.name}" if end == "rejected" else (
            f"deadline of {self.name} passed")

    def notice_step(self, end: WaitEnd) -> Step | None:
        """The notice of `end` as a step of its own, `<wait>.<end>_notice`: it goes
        through the ledger with its own key; None when the wait declares none."""
        effect = dict(self.notices).get(end)
        if effect is None:
            return None
        return Step(name=f"{self.name}.{end}{NOTICE_SUFFIX}", effect=effect,
                    retry=NOTICE_RETRY)

    @property
    def notice_steps(self) -> tuple[Step, ...]:
        return tuple(s for end in WAIT_ENDS if (s := self.notice_step(end)) is not None)

    @property
    def reminder_after(self) -> float | None:
        """Seconds from the start of the wait to its reminder; None without one."""
        return None if self.reminder is None else self.reminder.at * self.deadline

    @property
    def reminder_step(self) -> Step | None:
        """The reminder as a step of its own, `<wait>.reminder`: it goes through the
        ledger like any effect, with its own idempotency key, and the checker tells it
        apart from the flow's steps."""
        if self.reminder is None:
            return None
        return Step(name=f"{self.name}{REMINDER_SUFFIX}", effect=self.reminder.effect,
                    retry=RetryPolicy(max_attempts=1))

    @property
    def escalation_step(self) -> Step | None:
        """The escalation as a step of its own, `<wait>.escalation`, sent once like the
        reminder (one attempt; a redelivery repeats it under the same key)."""
        if self.escalation is None:
            return None
        return Step(name=f"{self.name}{ESCALATION_SUFFIX}", effect=self.escalation.effect,
                    retry=RetryPolicy(max_attempts=1))

    @property
    def while_open(self) -> tuple[WhileOpen, ...]:
        """What the wait sends if still open at the time: its reminder, then its
        escalation (this order, so that a workflow's commands for a wait with only a
        reminder stay those it always recorded)."""
        sends: list[WhileOpen] = []
        if (reminder := self.reminder_step) is not None and self.reminder_after is not None:
            sends.append(WhileOpen("reminder", reminder, self.reminder_after))
        if (escalation := self.escalation_step) is not None and self.escalation is not None:
            sends.append(WhileOpen("escalation", escalation, self.escalation.after))
        return tuple(sends)


@dataclass(frozen=True)
class Timer:
    """A durable pause: it must survive a worker or server restart."""

    name: str
    duration: float


@dataclass(frozen=True)
class Branch:
    """Steps that run one after another, beside the other branches of their group."""

    name: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Parallel:
    """A group of branches that run at the same time. The flow goes on past the group
    once every branch has finished (the join); when a branch fails, the others start no
    further step, the steps in flight finish, and every step that applied, in any
    branch or before the group, is compensated."""

    name: str
    branches: tuple[Branch, ...]

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(step for branch in self.branches for step in branch.steps)


Node: TypeAlias = Step | Wait | Timer | Parallel


INTERRUPT_NOTICE = "interrupt.notice"  # a dot: no node's name can take it


@dataclass(frozen=True)
class Interrupt:
    """A signal that may arrive at any point in an instance's life (a red flag, a
    cancellation by the board), not only at a declared wait.

    Once it arrives no further step starts; a step in flight finishes (its effect lands
    or fails as usual); then every step that applied is compensated in reverse, once
    each, and the instance ends compensated, `reason` giving the signal. Arriving during
    a wait ends the wait the same way; arriving after the instance finished does
    nothing. In a parallel group, no branch starts a further step. A notice, when
    declared, is sent once after the compensations, as the instance's last call.
    """

    signal: str
    notice: str | None = None

    @property
    def reason(self) -> str:
        """How every engine words the end of an interrupted instance."""
        return f"interrupted by {self.signal}"

    @property
    def notice_step(self) -> Step | None:
        """The notice as a step of its own, `interrupt.notice`, with its own key."""
        if self.notice is None:
            return None
        return Step(name=INTERRUPT_NOTICE, effect=self.notice, retry=NOTICE_RETRY)


@dataclass(frozen=True)
class SystemSpec:
    """A simulated external system that effects are sent to."""

    name: str
    honours_idempotency: bool = True


@dataclass(frozen=True)
class InstanceRequest:
    """The input of one instance of a flow, and the IDs that trace it everywhere."""

    instance_id: str
    run_id: str
    tenant_id: str
    entity_id: str
    date: str  # yyyymmdd, fixed when the instance starts so retries keep their keys
    correlation_id: str
    trace_id: str
    # The instance's values of the flow's inputs (`[input]`), as (name, items) pairs: a
    # tuple, so the request stays hashable and its expansion can be cached. An input not
    # given takes the flow's default. Lists (read back from JSON) become tuples.
    input: InstanceInput = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", tuple(
            (str(name), tuple(str(item) for item in items)) for name, items in self.input))


# One instance's input values: (input name, its items), in the order the flow declares.
InstanceInput: TypeAlias = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class InputSpec:
    """An input the flow takes from each instance: a list of item names (the parties of
    a deal), with the default an instance started without it takes."""

    name: str
    default: tuple[str, ...]


@dataclass(frozen=True)
class Flow:
    """A validated, engine-neutral business flow.

    Its nodes run in the order written. A wait's rejection or passed deadline, and a
    step's permanent failure, compensate the steps that applied. An `interrupt`, when
    declared, does the same from any point in the instance's life: once its signal
    arrives no further step starts (in any parallel branch either), a step in flight
    finishes (its effect lands or fails as usual), and then every step that applied is
    compensated in reverse, exactly once; the instance ends compensated with the reason
    "interrupted by <signal>", then sends the interrupt's notice if it declares one.
    Arriving during a wait ends the wait that way; arriving after the instance finished
    does nothing.
    """

    name: str
    version: int
    description: str
    approval_class: ApprovalClass
    reversibility_class: ReversibilityClass
    sensitivity_class: SensitivityClass
    nodes: tuple[Node, ...]
    systems: tuple[SystemSpec, ...]
    idempotency_key: str = DEFAULT_IDEMPOTENCY_KEY
    source: str = ""
    # A signal that may arrive at any point and compensates (see `Interrupt`).
    interrupt: Interrupt | None = None
    # What each instance may give (`[input]`): the items of a `for_each` step.
    inputs: tuple[InputSpec, ...] = ()

    def input_for(self, given: Mapping[str, tuple[str, ...]] | InstanceInput = (),
                  ) -> InstanceInput:
        """Every input of the flow, from `given` or its default; raises FlowError (a
        ConfigError to a caller) naming what to fix when `given` does not fit."""
        values = dict(given)
        declared = {spec.name for spec in self.inputs}
        if unknown := sorted(set(values) - declared):
            raise InputError(
                f"flow {self.name!r} takes no input {', '.join(unknown)}; "
                + (f"its inputs: {', '.join(sorted(declared))}" if declared else
                   "it declares none (an [input] table names what an instance may give)"))
        for name, items in values.items():
            check_items(f"input {name}", tuple(items))
        return tuple((spec.name, tuple(values.get(spec.name, spec.default)))
                     for spec in self.inputs)

    def for_instance(self, request: InstanceRequest | InstanceInput) -> Flow:
        """The flow one instance runs: each `for_each` step becomes a parallel group,
        named after the step, with a branch per item of the instance's input (a step
        `grant_access[acme]` in branch `acme`), in the order the items are given. The
        same input always gives the same flow (a Temporal workflow expands it again on
        replay); a flow without `for_each` is itself."""
        if not self.inputs:
            return self
        given = request.input if isinstance(request, InstanceRequest) else request
        return _expand(self, self.input_for(given))

    @property
    def expanded(self) -> bool:
        """Whether any step runs per item (a flow an instance expands)."""
        return any(s.for_each for s in self.steps)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step, those inside parallel groups included, in the order written."""
        return tuple(n for n in self.flat_nodes if isinstance(n, Step))

    @property
    def effect_steps(self) -> tuple[Step, ...]:
        """Every step whose effect goes through the ledger: the flow's steps, then the
        reminders of its waits (`<wait>.reminder`)."""
        return (*self.steps, *self.wait_effect_steps)

    @property
    def wait_effect_steps(self) -> tuple[Step, ...]:
        """The effects a wait sends besides the flow's steps: its reminder and its
        escalation, and its notice of a rejection or of a passed deadline; and the
        interrupt's notice. Nothing compensates them."""
        return (*(step for w in self.waits
                  for step in (*(s.step for s in w.while_open), *w.notice_steps)),
                *self.interrupt_steps)

    @property
    def interrupt_steps(self) -> tuple[Step, ...]:
        """The interrupt's notice as a step, when the flow declares one."""
        notice = None if self.interrupt is None else self.interrupt.notice_step
        return () if notice is None else (notice,)

    def interrupted(self, reason: str) -> bool:
        """Whether an engine's reason for an instance's end says its interrupt ended it
        (the reason alone, or followed by `; <what failed after>`)."""
        return self.interrupt is not None and (
            reason == self.interrupt.reason or reason.startswith(f"{self.interrupt.reason};"))

    def is_wait_effect(self, step: str) -> bool:
        """Whether a ledger row's step is a wait's reminder, escalation or notice, not a
        step."""
        return any(s.name == step for s in self.wait_effect_steps)

    def ended_at(self, reason: str) -> tuple[Wait, WaitEnd] | None:
        """The wait and how it ended, when an engine's reason for an instance's end says
        it ended at a wait by a rejection or a passed deadline (see `Wait.reason`)."""
        for wait in self.waits:
            for end in WAIT_ENDS:
                if reason == wait.reason(end) or reason.startswith(f"{wait.reason(end)};"):
                    return wait, end
        return None

    def notice_for(self, reason: str) -> Step | None:
        """The notice an instance that ended for `reason` owes, if any."""
        if self.interrupt is not None and self.interrupted(reason):
            return self.interrupt.notice_step
        ended = self.ended_at(reason)
        return None if ended is None else ended[0].notice_step(ended[1])

    @property
    def waits(self) -> tuple[Wait, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Wait))

    @property
    def groups(self) -> tuple[Parallel, ...]:
        return tuple(n for n in self.nodes if isinstance(n, Parallel))

    @property
    def flat_nodes(self) -> tuple[Step | Wait | Timer, ...]:
        """The nodes in the order written, each parallel group replaced by its steps."""
        return tuple(inner for node in self.nodes
                     for inner in (node.steps if isinstance(node, Parallel) else (node,)))

    def node(self, name: str) -> Node:
        for node in (*self.nodes, *(s for group in self.groups for s in group.steps)):
            if node.name == name:
                return node
        for step in self.wait_effect_steps:  # a wait's reminder, escalation or notice
            if step.name == name:
                return step
        raise FlowError(f"flow {self.name!r} has no step, wait or timer named {name!r} "
                        "(nor a parallel group)")

    def branch_of(self, step: str) -> tuple[Parallel, Branch] | None:
        """The parallel group and branch that `step` runs in; None for a step of its own."""
        for group in self.groups:
            for branch in group.branches:
                if any(s.name == step for s in branch.steps):
                    return group, branch
        return None

    def before(self, step: str) -> tuple[str, ...]:
        """The steps that have always finished before `step` begins: every step of the
        nodes before its own, and the earlier steps of its branch."""
        names: list[str] = []
        for node in self.nodes:
            inner = node.steps if isinstance(node, Parallel) else (node,)
            if any(n.name == step for n in inner):
                found = self.branch_of(step)
                if found is not None:
                    earlier = [s.name for s in found[1].steps]
                    names += earlier[:earlier.index(step)]
                return tuple(names)
            names += [n.name for n in inner if isinstance(n, Step)]
        return tuple(names)

    def beside(self, step: str) -> tuple[str, ...]:
        """The steps of the other branches of `step`'s group: they may run at any time
        while `step` does."""
        found = self.branch_of(step)
        if found is None:
            return ()
        group, own = found
        return tuple(s.name for b in group.branches if b is not own for s in b.steps)

    def following(self, step: str) -> tuple[str, ...]:
        """The steps that can begin first once `step` is done: the next of its branch, or
        the step after its node (after its group, for a branch's last step), or the first
        step of each branch when that node is a parallel group."""
        found = self.branch_of(step)
        if found is not None:
            names = [s.name for s in found[1].steps]
            if names.index(step) + 1 < len(names):
                return (names[names.index(step) + 1],)
            step = found[0].name
        tops = [n.name for n in self.nodes]
        for node in self.nodes[tops.index(step) + 1:] if step in tops else ():
            if isinstance(node, Step):
                return (node.name,)
            if isinstance(node, Parallel):
                return tuple(b.steps[0].name for b in node.branches)
        return ()

    def system(self, name: str) -> SystemSpec:
        for system in self.systems:
            if system.name == name:
                return system
        raise FlowError(f"flow {self.name!r} declares no system {name!r}")

    def key_for(self, step: str, request: InstanceRequest, *, compensation: bool = False) -> str:
        """The idempotency key of one step's effect (or of its compensation)."""
        return self.idempotency_key.format(
            tenant_id=request.tenant_id,
            flow=self.name,
            workflow_type=self.name,
            entity_id=request.entity_id,
            date=request.date,
            yyyymmdd=request.date,
            step=f"{step}.compensation" if compensation else step,
            instance_id=request.instance_id,
        )

    @property
    def operations(self) -> tuple[str, ...]:
        """Every operation the flow calls (`SYSTEM.OPERATION`): its steps' effects and
        compensations, its waits' reminders, escalations and notices, once each call site."""
        return (*(s.effect for s in self.effect_steps),
                *(s.compensation for s in self.steps if s.compensation))

    def compensations_for(self, done: list[str] | tuple[str, ...]) -> list[Step]:
        """The steps to compensate, in reverse order of completion."""
        return [
            step
            for step in (self.node(name) for name in reversed(done))
            if isinstance(step, Step) and step.compensation
        ]


_ITEM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_items(what: str, items: tuple[str, ...]) -> tuple[str, ...]:
    """`items` when each is a usable item name (it becomes part of a step's name and of
    its idempotency key) and none is given twice; else InputError saying what to fix."""
    if not items:
        raise InputError(f"{what}: give at least one item (it lists whom the step runs "
                         "for, for example buyer,counsel)")
    for item in items:
        if not _ITEM.match(item):
            raise InputError(f"{what}: item {item!r} must be 1 to 63 lower-case letters, "
                             "digits, '_' or '-', starting with a letter or digit (it "
                             "becomes part of a step's name and idempotency key), for "
                             "example acme or bidco-uk")
    if twice := sorted(item for item, n in Counter(items).items() if n > 1):
        raise InputError(f"{what}: {', '.join(twice)} given twice; give each item once")
    return items


@functools.lru_cache(maxsize=256)
def _expand(flow: Flow, values: InstanceInput) -> Flow:
    items = dict(values)
    nodes: list[Node] = []
    for node in flow.nodes:
        if isinstance(node, Step) and node.for_each is not None:
            nodes.append(Parallel(node.name, tuple(
                Branch(item, (node.for_item(item),)) for item in items[node.for_each])))
        else:
            nodes.append(node)
    # No inputs left to expand: the instance's flow is its own expansion.
    return replace(flow, nodes=tuple(nodes), inputs=())


# ---------------------------------------------------------------------------- validation


def validate(flow: Flow) -> Flow:
    """Return `flow` if it is sound; raise FlowError naming the flow, the item and the fix."""
    where = f"flow {flow.name!r}"
    if not _NAME.fullmatch(flow.name):
        raise FlowError(f"{where}: {NAME_RULE}")
    if flow.version < 1:
        raise FlowError(f"{where}: version must be a whole number from 1 up")
    if not flow.nodes:
        raise FlowError(f"{where}: it has no steps; add at least one [[nodes]] entry")
    seen: set[str] = set()
    signals: set[str] = set()
    systems = {s.name for s in flow.systems}
    for node in flow.nodes:
        at = f"{where}, {_KINDS[type(node)]} {node.name!r}"
        if not _NAME.fullmatch(node.name):
            raise FlowError(f"{at}: {NAME_RULE}")
        if node.name in seen:
            raise FlowError(f"{at}: the name is used twice; give every step, wait and timer "
                            "its own name")
        seen.add(node.name)
        if isinstance(node, Step):
            _validate_step(at, node, systems)
        elif isinstance(node, Parallel):
            _validate_group(at, node, systems, seen)
        elif isinstance(node, Wait):
            if not _NAME.fullmatch(node.signal):
                raise FlowError(f"{at}: signal = {node.signal!r}: {NAME_RULE}")
            if node.signal in signals:
                raise FlowError(f"{at}: signal {node.signal!r} is already awaited by another "
                                "wait; give each wait its own signal name")
            signals.add(node.signal)
            _check_seconds(at, "deadline", node.deadline, "72h")
            if node.deadline <= 0:
                raise FlowError(f"{at}: deadline must be positive, for example \"72h\"")
            _check_choice(at, "on_timeout", node.on_timeout, get_args(OnTimeout))
            _check_choice(at, "on_reject", node.on_reject, get_args(OnReject))
            _validate_while_open(at, node, systems)
            _validate_notices(at, node, systems)
        else:
            _check_seconds(at, "duration", node.duration, "1h")
            if node.duration < 0:
                raise FlowError(f"{at}: duration must not be negative")
    if flow.interrupt is not None:
        _validate_interrupt(where, flow.interrupt, signals, systems)
    _validate_inputs(where, flow)
    if flow.reversibility_class in (ReversibilityClass.R2, ReversibilityClass.R3) and not (
        flow.waits
    ):
        raise FlowError(
            f"{where}: reversibility_class {flow.reversibility_class} requires a human "
            "approval wait before the flow acts; add a [[nodes]] wait, or lower the class "
            "if the effects are in fact easy to reverse"
        )
    _validate_key(where, flow)
    return flow


def _validate_inputs(where: str, flow: Flow) -> None:
    """Each input has a sound name and default and feeds a `for_each` step; each
    `for_each` names a declared input."""
    declared = [spec.name for spec in flow.inputs]
    used = {s.for_each for s in flow.steps if s.for_each}
    for step in flow.steps:
        if step.for_each is not None and step.for_each not in declared:
            raise FlowError(f"{where}, step {step.name!r}: for_each = {step.for_each!r} names "
                            "no input; declare it in [input] with its default items, for "
                            f"example {step.for_each} = [\"buyer\", \"counsel\"]")
    for spec in flow.inputs:
        at = f"{where}, [input] {spec.name}"
        if not _NAME.fullmatch(spec.name):
            raise FlowError(f"{at}: {NAME_RULE}")
        if declared.count(spec.name) > 1:
            raise FlowError(f"{at}: the input is declared twice")
        try:
            check_items(f"{at} (its default)", spec.default)
        except InputError as error:
            raise FlowError(str(error)) from error
        if spec.name not in used:
            raise FlowError(f"{at}: no step runs for its items; add for_each = "
                            f"\"{spec.name}\" to a step, or remove the input")


def _validate_key(where: str, flow: Flow) -> None:
    """The idempotency key is a template of known fields that tells every call apart."""
    fields = _key_fields(where, flow.idempotency_key)
    if unknown := fields - KEY_FIELDS:
        raise FlowError(
            f"{where}: idempotency_key uses unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted(KEY_FIELDS)}"
        )
    if "step" not in fields and (fanned := [s.name for s in flow.steps if s.for_each]):
        raise FlowError(f"{where}: idempotency_key has no {{step}}, and step(s) "
                        f"{', '.join(fanned)} run once per item, so each item's call would "
                        "share one key and all but the first be absorbed; add {step} to "
                        "the key")
    if "step" not in fields:
        # The systems tell the calls apart by operation: two calls to one operation
        # would share a key, and the second would be absorbed as a repeat of the first.
        shared = sorted(op for op, n in Counter(flow.operations).items() if n > 1)
        if shared:
            raise FlowError(f"{where}: idempotency_key has no {{step}}, and the flow calls "
                            f"{', '.join(shared)} from more than one step, so those calls "
                            "would share a key and all but the first be absorbed; add "
                            "{step} to the key, or give each call its own operation")
    try:  # a format spec or conversion can still fail; find out now, not mid-run
        flow.idempotency_key.format(**dict.fromkeys(KEY_FIELDS, "x"))
    except (ValueError, KeyError, IndexError, AttributeError) as error:
        raise _bad_key(where, flow.idempotency_key, error) from error


def _key_fields(where: str, key: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(key) if name is not None}
    except ValueError as error:
        raise _bad_key(where, key, error) from error


def _bad_key(where: str, key: str, error: Exception) -> FlowError:
    return FlowError(f"{where}: idempotency_key {key!r} is not a valid template ({error}); "
                     "write fields as {name}, for example \"{tenant_id}:{flow}:{step}\"")


_KINDS: Mapping[type, str] = {Step: "step", Wait: "wait", Timer: "timer",
                               Parallel: "parallel group"}


def _validate_group(at: str, group: Parallel, systems: set[str], seen: set[str]) -> None:
    if len(group.branches) < 2:
        raise FlowError(f"{at}: a parallel group needs at least two branches to run at the "
                        "same time; give each [[nodes.steps]] its own branch (the default), "
                        "or write the steps as plain [[nodes]] steps")
    branches: set[str] = set()
    for branch in group.branches:
        if not _NAME.fullmatch(branch.name):
            raise FlowError(f"{at}: branch {branch.name!r}: {NAME_RULE}")
        if branch.name in branches:
            raise FlowError(f"{at}: branch {branch.name!r} is given twice")
        branches.add(branch.name)
        if not branch.steps:
            raise FlowError(f"{at}: branch {branch.name!r} has no step")
        for step in branch.steps:
            where = f"{at}, step {step.name!r}"
            if step.for_each is not None:
                raise FlowError(f"{where}: for_each = {step.for_each!r} makes the step a "
                                "parallel group of its own, one branch per item; write it as "
                                "a plain [[nodes]] step, outside the group")
            if not _NAME.fullmatch(step.name):
                raise FlowError(f"{where}: {NAME_RULE}")
            if step.name in seen:
                raise FlowError(f"{where}: the name is used twice; give every step, wait, "
                                "timer and group its own name")
            seen.add(step.name)
            _validate_step(where, step, systems)


def _check_effect(at: str, label: str, effect: str, example: str,
                  systems: set[str]) -> None:
    """An effect (a step's, its compensation's, a reminder's, an escalation's or a
    notice's) names an operation of a declared system."""
    if not _EFFECT.fullmatch(effect):
        raise FlowError(f"{at}: {label} {effect!r} must read SYSTEM.OPERATION, "
                        f"for example \"{example}\"")
    system = effect.split(".", 1)[0]
    if system not in systems:
        raise FlowError(f"{at}: {label} {effect!r} goes to system {system!r}, which is "
                        f"not declared; add [systems.{system}] with honours_idempotency "
                        "= true or false")


def _validate_step(at: str, step: Step, systems: set[str]) -> None:
    for label, effect in (("effect", step.effect), ("compensation", step.compensation)):
        if effect is not None:
            _check_effect(at, label, effect, "crm.create_record", systems)
    if step.read_only and step.compensation:
        raise FlowError(f"{at}: read_only = true says the step changes nothing, yet "
                        f"[compensations] undoes it with {step.compensation!r}; remove one")
    _check_seconds(at, "work", step.work, "90s")
    if step.work < 0:
        raise FlowError(f"{at}: work must not be negative; give how long the step's work "
                        "takes, for example \"90s\", or leave it out")
    _check_seconds(at, "timeout", step.timeout, "30s")
    if step.timeout <= 0:
        raise FlowError(f"{at}: timeout must be positive, for example \"30s\"")
    retry = step.retry
    if retry.max_attempts < 1:
        raise FlowError(f"{at}: retry.max_attempts must be 1 or more (1 means no retry)")
    if retry.max_attempts > MAX_ATTEMPTS:
        raise FlowError(f"{at}: retry.max_attempts = {retry.max_attempts} is more than any "
                        f"engine takes; give at most {MAX_ATTEMPTS}")
    _check_seconds(at, "retry.initial_interval", retry.initial_interval, "1s")
    _check_seconds(at, "retry.maximum_interval", retry.maximum_interval, "30s")
    if retry.initial_interval <= 0 or retry.maximum_interval < retry.initial_interval:
        raise FlowError(f"{at}: retry intervals must be positive and maximum_interval at "
                        "least initial_interval")
    if not math.isfinite(retry.backoff_coefficient) or retry.backoff_coefficient < 1:
        raise FlowError(f"{at}: retry.backoff_coefficient must be 1 or more")
    if retry.backoff_coefficient > MAX_BACKOFF:
        raise FlowError(f"{at}: retry.backoff_coefficient = {retry.backoff_coefficient:g} "
                        f"multiplies the interval absurdly; give at most {MAX_BACKOFF:g}")


def _validate_while_open(at: str, wait: Wait, systems: set[str]) -> None:
    if wait.reminder is not None:
        _validate_reminder(at, wait.reminder, systems)
    if wait.escalation is not None:
        _validate_escalation(at, wait, wait.escalation, systems)


def _validate_reminder(at: str, reminder: Reminder, systems: set[str]) -> None:
    if not math.isfinite(reminder.at) or not 0 < reminder.at < 1:
        raise FlowError(f"{at}: reminder.at = {reminder.at!r} must be a fraction of the "
                        "deadline between 0 and 1, for example 0.5 for half-way")
    _check_effect(at, "reminder.effect", reminder.effect, "notify.send_reminder", systems)


def _validate_escalation(at: str, wait: Wait, escalation: Escalation,
                         systems: set[str]) -> None:
    _check_seconds(at, "escalation.after", escalation.after, "14d")
    if escalation.after <= 0:
        raise FlowError(f"{at}: escalation.after must be positive: how long into the wait "
                        "its due date passes, for example \"14d\"")
    if escalation.after >= wait.deadline:
        raise FlowError(f"{at}: escalation.after = {_seconds_text(escalation.after)} is not "
                        f"before the deadline ({_seconds_text(wait.deadline)}), so the wait "
                        "would end before it escalates; give a shorter escalation.after, "
                        "or a longer deadline")
    _check_effect(at, "escalation.effect", escalation.effect, "notify.escalate", systems)


def _seconds_text(seconds: float) -> str:
    """A duration as its largest whole unit reads it: 1209600 s is "14d", 90 s "90s"."""
    for unit in ("w", "d", "h", "m", "s"):
        if seconds >= _UNITS[unit] and (seconds / _UNITS[unit]).is_integer():
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def _validate_interrupt(where: str, interrupt: Interrupt, awaited: set[str],
                        systems: set[str]) -> None:
    at = f"{where}, [interrupt]"
    if not _NAME.fullmatch(interrupt.signal):
        raise FlowError(f"{at}: signal = {interrupt.signal!r} must be "
                        f"{NAME_RULE.removeprefix('names are ')}, for example \"red_flag\"")
    if interrupt.signal in awaited:
        raise FlowError(f"{at}: signal {interrupt.signal!r} is also awaited by a wait; an "
                        "interrupt needs a signal of its own (a wait's reject already "
                        "compensates there)")
    if interrupt.notice is not None:
        _check_effect(at, "notice", interrupt.notice, "notify.send_cancellation", systems)


def _validate_notices(at: str, wait: Wait, systems: set[str]) -> None:
    for end, effect in wait.notices:
        if end not in WAIT_ENDS:
            raise FlowError(f"{at}: notices.{end} is not an ending; a wait ends "
                            f"{' or '.join(WAIT_ENDS)} (or approved, which needs no notice)")
        _check_effect(at, f"notices.{end}", effect, "notify.send_rejection", systems)
        key, action = ("on_reject", wait.on_reject) if end == "rejected" else (
            "on_timeout", wait.on_timeout)
        if action != "compensate":
            raise FlowError(f"{at}: notices.{end} is sent after the compensations of that "
                            f"ending, but {key} = {action!r}; set {key} = \"compensate\" or "
                            "remove the notice")


def _check_seconds(at: str, key: str, value: float, example: str) -> None:
    check_seconds(value, f"{at}: {key}", f'"{example}"')


def check_seconds(value: float, what: str, example: str, *,
                  error: type[GraduateError] = FlowError) -> float:
    """`value` unless it is NaN, infinite or above MAX_SECONDS (then `error`, naming
    `what`): such a timeout or deadline leaves an instance, a run or an operator
    waiting forever. The sign is each caller's to check, in its own words."""
    if not (math.isfinite(value) and value <= MAX_SECONDS):
        raise error(f"{what} = {value!r} is not a usable number of seconds: give a finite "
                    f"one of at most {MAX_SECONDS / 86400:g} days, for example {example}")
    return value


def _check_choice(at: str, key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FlowError(f"{at}: {key} = {value!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------- loading


def parse_duration(value: object, what: str) -> float:
    """Seconds from `30`, `"500ms"`, `"10s"`, `"5m"`, `"72h"`, `"1d"` or `"2w"`."""
    if isinstance(value, bool):
        raise FlowError(f"{what}: {value!r} is not a duration; write for example \"30s\"")
    seconds: float | None = None
    if isinstance(value, float):
        seconds = value
    elif isinstance(value, int):
        # An integer beyond a float's range is as unusable as infinity, not an overflow.
        seconds = float(value) if abs(value) <= MAX_SECONDS else (
            math.inf if value > 0 else -math.inf)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is not None:
        if not math.isnan(seconds) and seconds <= MAX_SECONDS:
            return seconds  # the sign is validate()'s to judge, with the item's name
        raise FlowError(f"{what}: {value!r} is not a duration graduate can wait for; give "
                        f"a finite one of at most {MAX_SECONDS / 86400:g}d, for example "
                        "\"30s\"")
    raise FlowError(f"{what}: {value!r} is not a duration; write for example \"30s\", "
                    "\"500ms\", \"5m\", \"72h\", \"2d\", \"2w\" or a number of seconds")


def load_flow(ref: str | Path, *, spikes_dir: Path | None = None) -> Flow:
    """Load and validate a flow from a TOML file, a name in `spikes_dir`, or `module:attr`."""
    text = str(ref)
    path = Path(text)
    if path.suffix == ".json":
        return _load_json(path)
    if path.suffix == ".toml" or _is_file(path):
        return _load_toml(path)
    if spikes_dir is not None and _exists(candidate := spikes_dir / f"{text}.toml"):
        return _load_toml(candidate)
    if ":" in text:
        return _load_python(text)
    known = ", ".join(f.stem for f in sorted(spikes_dir.glob("*.toml"))) if spikes_dir else ""
    hint = f" Flows in {spikes_dir}: {known}." if known else ""
    raise FlowError(
        f"no flow {text!r}: give a flow name from the spikes folder, a .toml file, or a "
        f"Python reference module:ATTRIBUTE.{hint} `graduate flows` lists them."
    )


def _is_file(path: Path) -> bool:
    """Whether `path` names a file; a name no file can have (too long for the file
    system) names none, so that a reference that long is judged as a flow's name."""
    try:
        return path.is_file()
    except OSError as error:
        return _named_none(path, error)


def _exists(path: Path) -> bool:
    """Whether something is at `path` (a name too long for the file system: nothing)."""
    try:
        return path.exists()
    except OSError as error:
        return _named_none(path, error)


def _named_none(path: Path, error: OSError) -> bool:
    """False for a name too long for the file system: no file has it. Any other error
    (a folder that cannot be searched, an I/O error) says nothing of whether a flow is
    there, and is not taken for "no flow": it is the message."""
    if error.errno != errno.ENAMETOOLONG:
        raise FlowError(f"cannot look for a flow at {path}: {error.strerror or error}; "
                        "check that its folder can be read") from error
    return False


def discover(spikes_dir: Path) -> list[tuple[Path, Flow | FlowError]]:
    """Every TOML flow in `spikes_dir`, loaded, or the error that stops it loading."""
    found: list[tuple[Path, Flow | FlowError]] = []
    for path in sorted(spikes_dir.glob("*.toml")):
        try:
            found.append((path, _load_toml(path)))
        except FlowError as error:
            found.append((path, error))
    return found


def _load_python(ref: str) -> Flow:
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise FlowError(f"flow {ref!r} must read module:ATTRIBUTE, both parts given, for "
                        "example myapp.flows:APPROVAL")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # the user's module, failing as it imports
        # (a sys.exit() in it too, which would end graduate without a word): say so, plainly
        raise FlowError(f"cannot import {module_name!r} for flow {ref!r}: {error!r}; fix the "
                        "module, or check the reference") from error
    flow = getattr(module, attribute, None)
    if not isinstance(flow, Flow):
        raise FlowError(f"{ref!r} is not a graduate.flow.Flow; point at a Flow object")
    return validate(replace(flow, source=ref))


def _load_toml(path: Path) -> Flow:
    try:
        text = read_text(path, "flow file", FlowError)
    except FileNotFoundError as error:
        raise FlowError(f"flow file {path} does not exist; check the path, or give a flow "
                        "name from the spikes folder (`graduate flows` lists them)") from error
    data = parse_toml(text, f"flow file {path}", FlowError)
    return validate(flow_from_dict(data, source=str(path.resolve()), origin=str(path)))


def _load_json(path: Path) -> Flow:
    """A flow in the JSON form of `flow_to_dict`: how graduate hands derived flows (a
    shortened deadline, a changed version for a deploy) to worker processes."""
    try:
        text = read_text(path, "flow file", FlowError)
    except FileNotFoundError as error:
        raise FlowError(f"flow file {path} does not exist") from error
    data = parse_json(text, f"flow file {path}", FlowError)
    if not isinstance(data, dict):
        raise FlowError(f"flow file {path} must hold a JSON object, as `flow_to_dict` "
                        "writes it")
    return validate(flow_from_dict(data, source=str(path.resolve()), origin=str(path)))


def write_flow_json(flow: Flow, path: Path) -> Flow:
    """Write `flow` as JSON to `path`; return it with `path` as its source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: matrix cells running side by side write the same derived flow
    # while another cell's workers may be reading it.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    temporary.write_text(json.dumps(flow_to_dict(flow), indent=2), encoding="utf-8")
    temporary.replace(path)
    return replace(flow, source=str(path.resolve()))


def flow_from_dict(data: Mapping[str, Any], *, source: str = "", origin: str = "") -> Flow:
    """Build a Flow from the TOML layout (also the JSON form that evidence stores)."""
    origin = origin or "flow"
    reader = _Reader(data, origin)
    meta = reader.table("flow", required=True)
    name = meta.text("name", required=True)
    where = f"{origin}: flow {name!r}"
    reader.origin = meta.origin = where
    classes = {
        key: meta.choice(key, cls)
        for key, cls in (
            ("approval_class", ApprovalClass),
            ("reversibility_class", ReversibilityClass),
            ("sensitivity_class", SensitivityClass),
        )
    }
    systems = tuple(
        SystemSpec(name=sys_name, honours_idempotency=table.boolean("honours_idempotency", True))
        for sys_name, table in reader.tables("systems", where)
    )
    compensations = reader.table("compensations", required=False)
    comp_map = {key: compensations.text(key, required=True) for key in compensations}
    nodes = tuple(_group(item, where) if "parallel" in item.data else _node(item, where)
                  for item in reader.array("nodes", where))
    step_names = {s.name for n in nodes
                  for s in (n.steps if isinstance(n, Parallel) else (n,)) if isinstance(s, Step)}
    for step_name in comp_map:
        if step_name not in step_names:
            raise FlowError(
                f"{where}: [compensations] names step {step_name!r}, which the flow does not "
                f"have; use one of {sorted(step_names)} or remove the line"
            )
    nodes = tuple(
        replace(n, compensation=comp_map.get(n.name)) if isinstance(n, Step)
        else _compensated_group(n, comp_map) if isinstance(n, Parallel)
        else n
        for n in nodes
    )
    interrupt = _interrupt(reader)
    inputs = _inputs(reader)
    reader.reject_unknown({"flow", "systems", "compensations", "nodes", "interrupt", "input"})
    meta.reject_unknown(
        {"name", "version", "description", "idempotency_key", *classes},
    )
    return Flow(
        name=name,
        version=meta.integer("version", 1),
        description=meta.text("description", required=False),
        approval_class=ApprovalClass(classes["approval_class"]),
        reversibility_class=ReversibilityClass(classes["reversibility_class"]),
        sensitivity_class=SensitivityClass(classes["sensitivity_class"]),
        nodes=nodes,
        systems=systems,
        idempotency_key=meta.text("idempotency_key", required=False) or DEFAULT_IDEMPOTENCY_KEY,
        source=source,
        interrupt=interrupt,
        inputs=inputs,
    )


def _inputs(reader: _Reader) -> tuple[InputSpec, ...]:
    """`[input]` with `parties = ["buyer", "counsel"]`: each input's default items."""
    table = reader.table("input", required=False)
    specs = []
    for name in table:
        value = table.data[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FlowError(f"{table.origin}: {name} = {value!r} must be a list of item "
                            f"names, the default an instance takes, for example {name} = "
                            "[\"buyer\", \"counsel\"]")
        specs.append(InputSpec(name, tuple(value)))
    return tuple(specs)


def _interrupt(reader: _Reader) -> Interrupt | None:
    """`[interrupt]` with `signal = "red_flag"` and an optional `notice = "SYSTEM.OP"`."""
    if "interrupt" not in reader.data:
        return None
    table = reader.table("interrupt", required=True)
    table.reject_unknown({"signal", "notice"}, hint="an interrupt is a signal that may "
                         "arrive at any time and compensates; its notice is sent after")
    notice = table.text("notice", required=False) if "notice" in table.data else None
    return Interrupt(signal=table.text("signal", required=True), notice=notice)


def _group(item: _Reader, where: str) -> Parallel:
    """A parallel group: `parallel = "NAME"` and its `[[nodes.steps]]`, each a branch of
    its own unless steps share `branch = "NAME"` (they then run in the order written)."""
    name = item.text("parallel", required=True)
    item.origin = f"{where}, parallel group {name!r}"
    for kind in ("step", "wait", "timer"):
        if kind in item.data:
            raise FlowError(f"{item.origin}: a [[nodes]] entry is either a parallel group or "
                            f"a {kind}; put the group's steps in [[nodes.steps]] entries")
    item.reject_unknown({"parallel", "steps"})
    entries = item.array("steps", item.origin)
    if not entries:
        raise FlowError(f"{item.origin}: it has no steps; add [[nodes.steps]] entries after "
                        "it, one per step")
    branches: dict[str, list[Step]] = {}
    for entry in entries:
        data = dict(entry.data)
        if "step" not in data:
            raise FlowError(f"{item.origin}: every [[nodes.steps]] entry is a step "
                            f"(step = \"NAME\", effect = ...); waits, timers and groups go "
                            f"between groups, not inside one; found {entry.describe()}")
        branch = data.pop("branch", data["step"])
        if not isinstance(branch, str):
            raise FlowError(f"{item.origin}, step {data['step']!r}: branch = {branch!r} must "
                            "be a string naming the branch")
        step = _node(_Reader(data, item.origin), item.origin)
        assert isinstance(step, Step)
        branches.setdefault(branch, []).append(step)
    return Parallel(name, tuple(Branch(b, tuple(steps)) for b, steps in branches.items()))


def _compensated_group(group: Parallel, comp_map: Mapping[str, str]) -> Parallel:
    return replace(group, branches=tuple(
        replace(b, steps=tuple(replace(s, compensation=comp_map.get(s.name)) for s in b.steps))
        for b in group.branches))


def _node(item: _Reader, where: str) -> Node:
    kinds = [k for k in ("step", "wait", "timer") if k in item.data]
    if len(kinds) != 1:
        raise FlowError(f"{where}: each [[nodes]] entry needs exactly one of step = \"NAME\", "
                        f"wait = \"NAME\" or timer = \"NAME\" (or parallel = \"NAME\" for a "
                        f"group of branches); found {item.describe()}")
    kind = kinds[0]
    name = item.text(kind, required=True)
    item.origin = f"{where}, {kind} {name!r}"
    node: Node
    if kind == "step":
        retry = item.table("retry", required=False)
        default = RetryPolicy()
        node = Step(
            name=name,
            effect=item.text("effect", required=True),
            timeout=item.duration("timeout", 30.0),
            work=item.duration("work", 0.0),
            read_only=item.boolean("read_only", False),
            for_each=item.text("for_each", required=False) or None,
            retry=RetryPolicy(
                max_attempts=retry.integer("max_attempts", default.max_attempts),
                initial_interval=retry.duration("initial_interval", default.initial_interval),
                backoff_coefficient=retry.number("backoff_coefficient",
                                                 default.backoff_coefficient),
                maximum_interval=retry.duration("maximum_interval", default.maximum_interval),
            ),
        )
        retry.reject_unknown({"max_attempts", "initial_interval", "backoff_coefficient",
                              "maximum_interval"})
        item.reject_unknown({"step", "effect", "timeout", "retry", "work", "read_only",
                             "for_each"},
                            hint="compensations go in the [compensations] table")
    elif kind == "wait":
        node = Wait(
            name=name,
            signal=item.text("signal", required=False) or name,
            deadline=item.duration("deadline", None),
            on_timeout=item.text("on_timeout", required=False) or "compensate",  # type: ignore[arg-type]
            on_reject=item.text("on_reject", required=False) or "compensate",  # type: ignore[arg-type]
            reminder=_reminder(item),
            notices=_notices(item),
            escalation=_escalation(item),
        )
        item.reject_unknown({"wait", "signal", "deadline", "on_timeout", "on_reject",
                             "reminder", "notices", "escalation"})
    else:
        node = Timer(name=name, duration=item.duration("duration", None))
        item.reject_unknown({"timer", "duration"})
    return node


def _reminder(item: _Reader) -> Reminder | None:
    """`reminder = { at = 0.5, effect = "notify.send_reminder" }`, or None."""
    if "reminder" not in item.data:
        return None
    table = item.table("reminder", required=True)
    table.reject_unknown({"at", "effect"}, hint="the reminder's time is a fraction of the "
                         "deadline, for example at = 0.5")
    if "at" not in table.data:
        raise FlowError(f"{table.origin}: at is missing; add at = 0.5 (the fraction of the "
                        "deadline after which the reminder is sent)")
    return Reminder(at=table.number("at", 0.0), effect=table.text("effect", required=True))


def _escalation(item: _Reader) -> Escalation | None:
    """`escalation = { after = "14d", effect = "notify.escalate" }`, or None."""
    if "escalation" not in item.data:
        return None
    table = item.table("escalation", required=True)
    table.reject_unknown({"after", "effect"}, hint="after is how long into the wait its "
                         "due date passes, for example after = \"14d\"; the wait stays "
                         "open until its deadline")
    if "after" not in table.data:
        raise FlowError(f"{table.origin}: after is missing; add after = \"14d\" (how long "
                        "into the wait the escalation is sent if the wait is still open)")
    return Escalation(after=table.duration("after", None),
                      effect=table.text("effect", required=True))


def _notices(item: _Reader) -> tuple[tuple[WaitEnd, str], ...]:
    """`notices = { rejected = "notify.send_rejection", expired = "notify.send_expiry" }`."""
    if "notices" not in item.data:
        return ()
    table = item.table("notices", required=True)
    table.reject_unknown(set(WAIT_ENDS), hint="a notice is sent when the wait ended "
                         "rejected or expired, after that ending's compensations")
    return tuple((end, table.text(end, required=True)) for end in WAIT_ENDS
                 if end in table.data)


class _Reader:
    """Typed access to one TOML table, with errors that name where the value is."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        self.data = data
        self.origin = origin

    def describe(self) -> str:
        return "{" + ", ".join(f"{k} = {v!r}" for k, v in self.data.items()) + "}"

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def _get(self, key: str, kind: type | tuple[type, ...], label: str, required: bool) -> Any:
        if key not in self.data:
            if required:
                raise FlowError(f"{self.origin}: {key} is missing; add {key} = <{label}>")
            return None
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise FlowError(f"{self.origin}: {key} = {value!r} must be {label}")
        return value

    def text(self, key: str, *, required: bool) -> str:
        value = self._get(key, str, "a string", required)
        return "" if value is None else str(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, bool, "true or false", False)
        return default if value is None else bool(value)

    def integer(self, key: str, default: int) -> int:
        value = self._get(key, int, "a whole number", False)
        return default if value is None else int(value)

    def number(self, key: str, default: float) -> float:
        value = self._get(key, (int, float), "a number", False)
        return default if value is None else float(value)

    def duration(self, key: str, default: float | None) -> float:
        if key not in self.data:
            if default is None:
                raise FlowError(f"{self.origin}: {key} is missing; add {key} = \"30s\" "
                                "(or another duration)")
            return default
        return parse_duration(self.data[key], f"{self.origin}: {key}")

    def choice(self, key: str, cls: type[StrEnum]) -> str:
        allowed = ", ".join(f"{m.value} ({CLASS_MEANINGS[key][m.value]})" for m in cls)
        if key not in self.data:
            raise FlowError(f"{self.origin}: {key} is missing; the execution-fabric policy "
                            f"requires it. Add {key} = one of: {allowed}")
        value = self.data[key]
        if not isinstance(value, str) or value not in {m.value for m in cls}:
            raise FlowError(f"{self.origin}: {key} = {value!r} is not allowed; use one of: "
                            f"{allowed}")
        return str(value)

    def table(self, key: str, *, required: bool) -> _Reader:
        value = self._get(key, dict, "a table", required)
        return _Reader(value or {}, f"{self.origin} [{key}]")

    def tables(self, key: str, where: str) -> list[tuple[str, _Reader]]:
        outer = self._get(key, dict, "a table of tables", False) or {}
        found = []
        for name, value in outer.items():
            if not isinstance(value, dict):
                raise FlowError(f"{where}: [{key}.{name}] must be a table")
            reader = _Reader(value, f"{where} [{key}.{name}]")
            reader.reject_unknown({"honours_idempotency"})
            found.append((name, reader))
        return found

    def array(self, key: str, where: str) -> list[_Reader]:
        value = self._get(key, list, "an array of tables ([[nodes]])", False) or []
        if not all(isinstance(v, dict) for v in value):
            raise FlowError(f"{where}: every entry of {key} must be a [[{key}]] table")
        return [_Reader(v, where) for v in value]

    def reject_unknown(self, known: set[str], hint: str = "") -> None:
        if unknown := sorted(set(self.data) - known):
            extra = f"; {hint}" if hint else ""
            raise FlowError(f"{self.origin}: unknown key(s) {unknown}; allowed: "
                            f"{sorted(known)}{extra}")


# ---------------------------------------------------------------------------- JSON form


def flow_to_dict(flow: Flow) -> dict[str, Any]:
    """The flow in the TOML layout, for evidence and for engines that carry it as data."""
    nodes: list[dict[str, Any]] = []
    for node in flow.nodes:
        if isinstance(node, Step):
            nodes.append(_step_dict(node))
        elif isinstance(node, Parallel):
            nodes.append({"parallel": node.name,
                          "steps": [{**_step_dict(s), "branch": b.name}
                                    for b in node.branches for s in b.steps]})
        elif isinstance(node, Wait):
            nodes.append({"wait": node.name, "signal": node.signal, "deadline": node.deadline,
                          "on_timeout": node.on_timeout, "on_reject": node.on_reject,
                          # Only when declared: flows stored before reminders read the same.
                          **({"reminder": {"at": node.reminder.at,
                                           "effect": node.reminder.effect}}
                             if node.reminder else {}),
                          **({"notices": dict(node.notices)} if node.notices else {}),
                          **({"escalation": {"after": node.escalation.after,
                                             "effect": node.escalation.effect}}
                             if node.escalation else {})})
        else:
            nodes.append({"timer": node.name, "duration": node.duration})
    return {
        "flow": {
            "name": flow.name, "version": flow.version, "description": flow.description,
            "approval_class": flow.approval_class.value,
            "reversibility_class": flow.reversibility_class.value,
            "sensitivity_class": flow.sensitivity_class.value,
            "idempotency_key": flow.idempotency_key,
        },
        "systems": {s.name: {"honours_idempotency": s.honours_idempotency}
                    for s in flow.systems},
        "compensations": {s.name: s.compensation for s in flow.steps if s.compensation},
        "nodes": nodes,
        # Only when declared: flows stored before inputs read the same.
        **({"input": {spec.name: list(spec.default) for spec in flow.inputs}}
           if flow.inputs else {}),
        # Only when declared: flows stored before interrupts read the same.
        **({"interrupt": {"signal": flow.interrupt.signal,
                          **({"notice": flow.interrupt.notice}
                             if flow.interrupt.notice else {})}}
           if flow.interrupt else {}),
    }


def _step_dict(step: Step) -> dict[str, Any]:
    r = step.retry
    return {
        "step": step.name, "effect": step.effect, "timeout": step.timeout,
        "retry": {"max_attempts": r.max_attempts, "initial_interval": r.initial_interval,
                  "backoff_coefficient": r.backoff_coefficient,
                  "maximum_interval": r.maximum_interval},
        # Only when declared: flows stored before steps had work read the same.
        **({"work": step.work} if step.work else {}),
        # Only when declared, likewise.
        **({"read_only": True} if step.read_only else {}),
        **({"for_each": step.for_each} if step.for_each else {}),
    }
