"""Verdicts, from ground truth only: the ledger and the engine's own record.

The checker never looks at what the harness meant to happen. For each instance it
reads every effect call in the ledger and the state the engine reports, and says
whether the business commitment was completed, compensated, failed visibly, lost
(nothing holds it any more) or stuck (held, but not moving); how often each effect
ran and whether idempotency keys absorbed the repeats; and, when a fault hit the
instance, at which step it resumed and how long that took.

Two faults add a judgement of their own, each a pure function below: a second start of
a business key (`judge_starts`: exactly one set of effects per key, or a visible
refusal) and an operator's rollback (`judge_rollback`: compensation of exactly the steps
that applied, in reverse, once each, and a consistent end). The flow's interrupt gets
one too (`judge_interrupt`): no step started once it was recorded, and every step that
applied compensated once, in reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from graduate import audit
from graduate.adapters.base import HistoryEvent, InstanceState, InstanceStatus
from graduate.flow import ESCALATION_SUFFIX, WAIT_ENDS, Flow, Step, Timer, Wait
from graduate.ledger import EffectRecord, InstanceRecord, Outcome, PointReached


class Verdict(StrEnum):
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"  # visibly, with a reason
    LOST = "lost"  # no progress, and nothing holds it any more
    STUCK = "stuck"  # the engine still holds it, but it did not finish in time

    @property
    def fails_run(self) -> bool:
        """A commitment lost, stuck, or failed (neither done nor undone) fails its run."""
        return self in (Verdict.LOST, Verdict.STUCK, Verdict.FAILED)


@dataclass(frozen=True)
class EffectVerdict:
    """What one step's effect (or its compensation) did to the outside world."""

    step: str
    kind: str
    calls: int
    applied: int
    absorbed: int
    errors: int

    @property
    def unabsorbed_duplicates(self) -> int:
        """Applications beyond the first: the world changed twice."""
        return max(self.applied - 1, 0)


@dataclass(frozen=True)
class Resume:
    """How an instance affected by a fault went on.

    An instance is affected when it sat at the armed fault point; when the fault cut
    short an attempt of one of its steps (`interrupted`): the ledger shows a later
    attempt of that step that no failure of the one before explains, or the engine
    records an attempt that timed out or came back; or when, with none of its attempts
    cut short, its work waited for the recovery (`held_up`): the engine records a task
    that sat with the lost worker, or the instance, in flight when the fault fired,
    made no call until the recovery. For a held-up instance, `time_to_resume` is the
    delay the fault cost it.
    """

    in_flight: str  # the step at the fault point, cut short, or held up
    point: str  # before-effect, after-effect (its effect had landed), during-wait
    resumed_at: str | None  # step of the first effect call after the fault
    exact: bool  # went on at the step in flight (or the next), no earlier step again
    time_to_resume: float | None  # None when it continued: nothing had to resume
    # Steps whose effect had landed before the fault and ran again after it: earlier
    # steps, and at an after-effect point the step in flight itself.
    reran: tuple[str, ...] = ()
    # The very call at the fault point carried on, in the same process and attempt (a
    # warm stop let it finish, a restarted server let it complete): no resume was needed.
    continued: bool = False
    interrupted: bool = False  # hit by an attempt cut short, not at the armed point
    held_up: bool = False  # no attempt cut short: its work waited for the recovery
    # Where `time_to_resume` was read: the engine's own record (which event) when it
    # has one, else the ledger (the first effect call after the fault).
    measured_from: str = ""

    @property
    def affected_as(self) -> str:
        """How the fault caught the instance, in words."""
        if self.held_up:
            return "held up"
        return "attempt cut short" if self.interrupted else "at the fault point"

    @property
    def resumed_exactly(self) -> bool:
        """At the step in flight, with nothing that had landed run again."""
        return self.exact and not self.reran


@dataclass(frozen=True)
class CorrelationBreak:
    """An effect whose correlation or trace ID is not its instance's: the propagation of
    graduate's IDs (or of the application's trace) broke before this call."""

    effect_id: int
    step: str
    attempt: int
    instance_id: str  # as the call recorded it: empty when it named no instance
    field: str  # "correlation_id" or "trace_id"
    expected: str
    found: str


def correlation_breaks(correlation_id: str, trace_id: str,
                       effects: Sequence[EffectRecord]) -> tuple[CorrelationBreak, ...]:
    """Every effect among `effects` whose correlation or trace ID differs from the
    instance's (`correlation_id`, `trace_id`), one item per differing ID."""
    breaks = []
    for effect in effects:
        for name, expected, found in (("correlation_id", correlation_id, effect.correlation_id),
                                      ("trace_id", trace_id, effect.trace_id)):
            if found != expected:
                breaks.append(CorrelationBreak(
                    effect_id=effect.id, step=effect.step, attempt=effect.attempt,
                    instance_id=effect.instance_id, field=name, expected=expected,
                    found=found))
    return tuple(breaks)


@dataclass(frozen=True)
class SecondStart:
    """A start of an instance's business key while the instance was in flight."""

    trace_id: str  # the second start's own trace, which its effects carry
    at: float
    refused: str | None  # the engine's refusal in words; None when it accepted the start


@dataclass(frozen=True)
class StartsVerdict:
    """What starting one business key more than once did to the outside world."""

    business_key: str
    starts: int  # the first start and every second one
    refused: tuple[str, ...]  # the engine's refusals, in words
    effect_sets: tuple[str, ...]  # the traces whose effects landed: one per start that ran
    reason: str

    @property
    def passed(self) -> bool:
        return len(self.effect_sets) <= 1


@dataclass(frozen=True)
class RollbackVerdict:
    """What an operator's cancellation of an instance in flight undid."""

    cancelled_at: float
    applied: tuple[str, ...]  # steps whose effect landed, in the order they first landed
    compensated: tuple[str, ...]  # compensations that landed, in the order they ran
    problems: tuple[str, ...]  # each names the step it is about

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class InterruptVerdict:
    """What the flow's interrupt undid, and whether anything ran after it."""

    signal: str
    interrupted_at: float | None  # when it was recorded; None when unknown
    applied: tuple[str, ...]  # steps whose effect landed, in the order they first landed
    compensated: tuple[str, ...]  # compensations that landed, in the order they ran
    problems: tuple[str, ...]  # each a sentence naming the step it is about

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class FaultActs:
    """What a fault did to single instances (a second start, a cancellation): facts the
    verdicts of those instances take into account, filled in while the fault fires."""

    second_starts: dict[str, list[SecondStart]] = field(default_factory=dict)
    cancelled: dict[str, float] = field(default_factory=dict)  # instance -> when

    def start_again(self, instance_id: str, start: SecondStart) -> None:
        self.second_starts.setdefault(instance_id, []).append(start)


# How much longer than its reminder's time a wait must have lasted, as the ledger shows
# it, before a reminder is owed: the ledger sees the wait end only when the step after it
# (or a compensation) calls out, one engine hop after the answer, and a state machine's
# tick comes up to its interval late. A fixed part for the hop, a part that grows with
# the reminder's time for the engines' timers.
REMINDER_GRACE = 2.0
REMINDER_GRACE_SHARE = 0.1


# A NoticeVerdict's `end` for the interrupt's notice (a wait's are `rejected`, `expired`).
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class NoticeVerdict:
    """What became of one notice of how a wait ended (`rejected` or `expired`), or of the
    interrupt's (`interrupted`): owed exactly once, after the compensations, when the
    engine reports the instance ended that way there; never owed otherwise."""

    owner: str  # what the notice tells of: the wait's name, or the interrupt's signal
    end: str  # rejected or expired (a wait's), or interrupted (the interrupt's)
    step: str  # `<wait>.<end>_notice`, as the ledger names its calls
    expected: bool  # the engine reports the instance ended this way here
    calls: int
    applied: int
    absorbed: int
    # It landed before a compensation of the instance did: people were told before the
    # drafts were voided.
    early: bool = False

    @property
    def sent(self) -> bool:
        return bool(self.applied or self.absorbed)

    @property
    def missing(self) -> bool:
        return self.expected and not self.sent

    @property
    def unexpected(self) -> bool:
        """Sent, though the instance did not end this way."""
        return self.sent and not self.expected

    @property
    def problem(self) -> bool:
        """Missing, unexpected or early. (Sent twice is an unabsorbed duplicate, counted
        with the other effects.)"""
        return self.missing or self.unexpected or self.early

    def describe(self) -> str:
        if self.end == INTERRUPTED:
            what, ended = f"notice of the interrupt {self.owner}", "was interrupted"
            not_ended = "was not interrupted"
        else:
            what, ended = f"{self.end} notice of {self.owner}", f"ended {self.end}"
            not_ended = f"did not end {self.end} there"
        if self.missing:
            failed = f"; its {self.calls} call(s) failed" if self.calls else ""
            return f"{what} missing: the instance {ended} and it was never sent{failed}"
        if self.unexpected:
            return f"{what} sent, but the instance {not_ended}"
        if self.early:
            return f"{what} sent before the compensations had landed"
        if self.applied > 1:
            return f"{what} sent {self.applied} times, a duplicate"
        absorbed = f", {self.absorbed} repeat(s) absorbed" if self.absorbed else ""
        return f"{what} sent once after the compensations{absorbed}"


def judge_notices(flow: Flow, effects: Sequence[EffectRecord],
                  status: InstanceStatus) -> tuple[NoticeVerdict, ...]:
    """One verdict per notice the instance owed or sent. Which ending the instance had is
    the engine's word (its reason, worded by `Wait.reason` on every engine); what was
    sent, and when, is the ledger's."""
    ended = flow.ended_at(status.detail) if status.state.finished else None
    undone = [e.finished_at for e in effects if e.kind == "compensation" and _landed(e)]
    verdicts = []
    for wait in flow.waits:
        for end in WAIT_ENDS:
            step = wait.notice_step(end)
            if step is None:
                continue
            if (verdict := _notice_verdict(wait.name, end, step, effects, undone,
                                           expected=ended == (wait, end))) is not None:
                verdicts.append(verdict)
    if (notice := _interrupt_notice(flow, effects, status, undone)) is not None:
        verdicts.append(notice)
    return tuple(verdicts)


def _interrupt_notice(flow: Flow, effects: Sequence[EffectRecord], status: InstanceStatus,
                      undone: Sequence[float]) -> NoticeVerdict | None:
    """The interrupt's notice, owed when the engine reports the instance interrupted."""
    step = None if flow.interrupt is None else flow.interrupt.notice_step
    if flow.interrupt is None or step is None:
        return None
    return _notice_verdict(flow.interrupt.signal, INTERRUPTED, step, effects, undone,
                           expected=status.state.finished and flow.interrupted(status.detail))


def _notice_verdict(owner: str, end: str, step: Step, effects: Sequence[EffectRecord],
                    undone: Sequence[float], *, expected: bool) -> NoticeVerdict | None:
    """The verdict on one notice, from its calls in the ledger; None when it was neither
    owed nor sent. `undone`: when each compensation landed (a notice goes after them)."""
    calls = [e for e in effects if e.step == step.name and e.kind == "effect"]
    if not expected and not calls:
        return None
    landed = [e.finished_at for e in calls if _landed(e)]
    return NoticeVerdict(
        owner=owner, end=end, step=step.name, expected=expected, calls=len(calls),
        applied=sum(1 for e in calls if e.outcome is Outcome.APPLIED),
        absorbed=sum(1 for e in calls if e.outcome is Outcome.ABSORBED),
        early=bool(landed and undone and min(landed) < max(undone)))


@dataclass(frozen=True)
class ReminderVerdict:
    """What became of one wait's reminder or escalation (see `Wait.while_open`): expected
    at most once, and exactly once when the wait outlived its time."""

    wait: str
    step: str  # `<wait>.reminder` or `<wait>.escalation`, as the ledger names its calls
    after: float  # seconds into the wait it is due
    waited: float | None  # how long the wait lasted, as the ledger shows; None: not ended
    calls: int
    applied: int
    absorbed: int

    @property
    def due(self) -> bool:
        return self.waited is not None and self.waited > (
            self.after * (1 + REMINDER_GRACE_SHARE) + REMINDER_GRACE)

    @property
    def sent(self) -> bool:
        return bool(self.applied or self.absorbed)

    @property
    def missing(self) -> bool:
        """Due, and no call of it landed."""
        return self.due and not self.sent

    @property
    def early(self) -> bool:
        """Sent, though the wait had surely ended before its time: the ledger's span of
        the wait runs past the answer (to the next call), so one shorter than the time,
        by more than the grace, means the wait was no longer open then."""
        return self.sent and self.waited is not None and (
            self.waited < self.after - REMINDER_GRACE)

    @property
    def problem(self) -> bool:
        return self.missing or self.early

    @property
    def kind(self) -> str:
        """`reminder` or `escalation`, read from the step's name (evidence stored before
        escalations keeps no kind)."""
        return "escalation" if self.step.endswith(ESCALATION_SUFFIX) else "reminder"

    def describe(self) -> str:
        waited = "" if self.waited is None else f" (the wait lasted {self.waited:.1f}s)"
        what = f"{self.kind} of {self.wait}"
        if self.missing:
            failed = f"; its {self.calls} call(s) failed" if self.calls else ""
            return (f"{what} missing: due {self.after:g}s into the wait, "
                    f"never sent{waited}{failed}")
        if self.early:
            return (f"{what} sent though the wait ended before its time: due "
                    f"{self.after:g}s into the wait{waited}")
        if self.applied > 1:
            return f"{what} sent {self.applied} times, a duplicate{waited}"
        if self.sent:
            absorbed = f", {self.absorbed} repeat(s) absorbed" if self.absorbed else ""
            return f"{what} sent once{absorbed}{waited}"
        return f"{what} not sent: not due{waited}"


def judge_reminders(flow: Flow, record: InstanceRecord, effects: Sequence[EffectRecord],
                    status: InstanceStatus) -> tuple[ReminderVerdict, ...]:
    """One verdict per reminder and per escalation of a wait of `flow` that the instance
    reached. Duplicates are counted with the other effects (`effect_verdicts`, where each
    is a step of its own); this adds whether one was owed."""
    verdicts = []
    for wait, step, after in ((w, s.step, s.after) for w in flow.waits for s in w.while_open):
        span = waited(flow, wait, record, effects, status)
        if span is None and not any(e.step == step.name for e in effects):
            continue  # never reached, or still waiting with nothing sent
        calls = [e for e in effects if e.step == step.name and e.kind == "effect"]
        verdicts.append(ReminderVerdict(
            wait=wait.name, step=step.name, after=after, waited=span, calls=len(calls),
            applied=sum(1 for e in calls if e.outcome is Outcome.APPLIED),
            absorbed=sum(1 for e in calls if e.outcome is Outcome.ABSORBED)))
    return tuple(verdicts)


def waited(flow: Flow, wait: Wait, record: InstanceRecord, effects: Sequence[EffectRecord],
           status: InstanceStatus) -> float | None:
    """How long the instance sat at `wait`, from the ledger: from the moment the last step
    before it landed (or the instance started) to the first call after it (the next
    step's, or a compensation's), or to the end of a finished instance. None when the
    instance never reached the wait or has not left it."""
    before = set(flow.before(wait.name))
    calls = [e for e in effects if not flow.is_wait_effect(e.step)]
    landed = [e for e in calls if e.kind == "effect" and e.step in before and _landed(e)]
    if {e.step for e in landed} != before:
        return None
    began = max((e.finished_at for e in landed), default=record.started_at)
    later = [e for e in calls if e.started_at >= began
             and (e.kind == "compensation" or e.step not in before)]
    if later:
        first = min(later, key=lambda e: e.started_at)
        # The timers between the wait and that step ran in full after the wait: a lower
        # bound, so that a reminder is owed only when the wait surely outlived its time.
        timers = 0.0
        if first.kind == "effect":
            names = [n.name for n in flow.nodes]
            found = flow.branch_of(first.step)
            node = found[0].name if found else first.step
            until = names.index(node) if node in names else len(names)
            timers = sum(n.duration for n in flow.nodes[names.index(wait.name) + 1:until]
                         if isinstance(n, Timer))
        return max(first.started_at - began - timers, 0.0)
    if status.finished_at is not None and status.state.finished:
        return status.finished_at - began
    return None


@dataclass(frozen=True)
class InstanceVerdict:
    instance_id: str
    correlation_id: str
    trace_id: str
    verdict: Verdict
    reason: str
    engine_state: str
    effects: tuple[EffectVerdict, ...]
    resume: Resume | None
    time_to_complete: float | None
    correlation_breaks: tuple[CorrelationBreak, ...] = ()
    starts: StartsVerdict | None = None  # when its business key was started again
    rollback: RollbackVerdict | None = None  # when an operator cancelled it
    # What is missing or broken in the audit trail the team's own systems kept (an app
    # that declares how to read it), one item per problem, each naming its effect.
    audit_gaps: tuple[str, ...] = ()
    reminders: tuple[ReminderVerdict, ...] = ()  # one per wait with a reminder it reached
    notices: tuple[NoticeVerdict, ...] = ()  # one per notice owed or sent
    interrupt: InterruptVerdict | None = None  # when its interrupt was sent or ended it
    # The instance's input, defaults included (the items its `for_each` steps ran for);
    # empty for a flow without inputs.
    input: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def unabsorbed_duplicates(self) -> int:
        return sum(e.unabsorbed_duplicates for e in self.effects)

    @property
    def absorbed(self) -> int:
        return sum(e.absorbed for e in self.effects)


def duplicate_failure(item: InstanceVerdict, effect: EffectVerdict) -> str:
    """The run's failure for an effect that changed the world more than once."""
    return (f"{item.instance_id}: {effect.step} ({effect.kind}) applied {effect.applied} "
            f"times, an unabsorbed duplicate ({item.correlation_id})")


@dataclass(frozen=True)
class RunVerdict:
    """The run as a whole: counts per verdict, and whether the required properties hold."""

    counts: dict[str, int]
    unabsorbed_duplicates: int
    absorbed_duplicates: int
    resumed_exactly: int
    hit_by_fault: int  # every instance affected: at the point, cut short or held up
    failures: tuple[str, ...] = field(default_factory=tuple)
    correlation_breaks: int = 0  # effect calls that lost their instance's IDs
    interrupted: int = 0  # of those hit: an attempt of theirs cut short elsewhere
    held_up: int = 0  # of those hit: none of their attempts cut short, only delayed

    @property
    def passed(self) -> bool:
        return not self.failures


def effect_verdicts(effects: Sequence[EffectRecord]) -> tuple[EffectVerdict, ...]:
    """One verdict per (step, kind), in the order the steps first ran."""
    order: list[tuple[str, str]] = []
    for effect in effects:
        if (effect.step, effect.kind) not in order:
            order.append((effect.step, effect.kind))
    verdicts = []
    for step, kind in order:
        calls = [e for e in effects if e.step == step and e.kind == kind]
        verdicts.append(EffectVerdict(
            step=step, kind=kind, calls=len(calls),
            applied=sum(1 for e in calls if e.outcome is Outcome.APPLIED),
            absorbed=sum(1 for e in calls if e.outcome is Outcome.ABSORBED),
            errors=sum(1 for e in calls if e.outcome.failed),
        ))
    return tuple(verdicts)


def judge_instance(flow: Flow, record: InstanceRecord, effects: Sequence[EffectRecord],
                   status: InstanceStatus, *, engine_holds: bool | None,
                   reached: PointReached | None = None,
                   fault_at: float | None = None, cannot_tell: str = "",
                   history: Sequence[HistoryEvent] = (),
                   recovered_at: float | None = None,
                   ran_before_fault: Collection[int] = (),
                   interrupted_at: float | None = None) -> InstanceVerdict:
    """The verdict of one instance from its ledger rows and its engine's final status.

    `fault_at` is when the fault fired (for an instance it caught at the armed point,
    `reached`, the firing that caught it): an instance not at the point is still hit when
    the fault cut short one of its attempts, as the ledger (see `interrupted`) or the
    engine's own `history` (a task it records as cut short after the fault) shows; and
    it is held up when its work waited for the recovery (`recovered_at`, when the fault's
    recovery, such as a restarted worker, began; `ran_before_fault`, the processes that
    made effect calls before the fault): see `held_up`. The time to resume
    is read from the engine's `history` where it records a worker taking the work up.

    `engine_holds` is None when the engine could not see whether anything still holds
    an unfinished instance; `cannot_tell` then says what it could not inspect.
    `interrupted_at` is when the flow's interrupt was recorded for the instance (the
    sender's clock, once the engine took it), if it was sent: see `judge_interrupt`.

    The instance is judged on the flow it ran: its `for_each` steps expanded for the
    input the ledger registered (`Flow.for_instance`); a point armed at such a step
    was reached by one of its expansions, which the ledger names."""
    flow = flow.for_instance(record.request)
    if reached is not None and reached.expansion:
        reached = replace(reached, step=reached.expansion)
    per_effect = effect_verdicts(effects)  # reminders included: a duplicate is one
    reminders = judge_reminders(flow, record, effects, status)
    notices = judge_notices(flow, effects, status)
    # A reminder or a notice is no step of the flow: resumes and outcomes are read
    # without them.
    every, effects = effects, [e for e in effects if not flow.is_wait_effect(e.step)]
    landed = {e.step for e in effects if e.kind == "effect"
              and e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)}
    verdict, reason = _outcome(flow, status, landed, per_effect, engine_holds, cannot_tell,
                               effects)
    resume = None
    if fault_at is not None:
        if reached is not None:
            resume = _resume(flow, effects, reached, fault_at, history)
        elif (cut := interrupted(flow, effects, fault_at)
               or _cut_short_by_engine(effects, history, fault_at)) is not None:
            resume = replace(_resume(flow, effects, cut, fault_at, history), interrupted=True)
        elif (waited := held_up(record, effects, status, history, fault_at,
                                recovered_at, ran_before_fault)) is not None:
            resume = replace(_resume(flow, effects, waited, fault_at, history), held_up=True)
    complete = (status.finished_at - record.started_at
                if status.finished_at is not None and status.state.finished else None)
    return _with_interrupt(InstanceVerdict(
        instance_id=record.instance_id, correlation_id=record.correlation_id,
        trace_id=record.trace_id, verdict=verdict, reason=reason, input=dict(record.input),
        engine_state=status.state.value, effects=per_effect, resume=resume,
        time_to_complete=complete,
        correlation_breaks=correlation_breaks(record.correlation_id, record.trace_id, every),
        reminders=reminders,
        notices=notices,
    ), flow, every, status, interrupted_at)


def _with_interrupt(verdict: InstanceVerdict, flow: Flow, effects: Sequence[EffectRecord],
                    status: InstanceStatus, interrupted_at: float | None) -> InstanceVerdict:
    """`verdict` with the judgement of the interrupt, when it was sent or the engine
    says it ended the instance; its first problem fails a verdict that would pass."""
    if flow.interrupt is None or (interrupted_at is None and not flow.interrupted(
            status.detail)):
        return verdict
    judged = judge_interrupt(flow, effects, status, interrupted_at)
    if judged.problems and not verdict.verdict.fails_run:
        verdict = replace(verdict, verdict=Verdict.FAILED,
                          reason=f"interrupted by {judged.signal}, but {judged.problems[0]}")
    return replace(verdict, interrupt=judged)


def _outcome(flow: Flow, status: InstanceStatus, landed: set[str],
             per_effect: tuple[EffectVerdict, ...],
             engine_holds: bool | None, cannot_tell: str,
             effects: Sequence[EffectRecord]) -> tuple[Verdict, str]:
    if status.state is InstanceState.COMPLETED:
        missing = [s.name for s in flow.steps if s.name not in landed]
        if missing:
            return Verdict.LOST, (f"the engine reports completed, but the ledger has no "
                                  f"applied effect for {', '.join(missing)}")
        return Verdict.COMPLETED, "every step's effect is in the ledger"
    if status.state is InstanceState.COMPENSATED:
        undone = {e.step for e in per_effect if e.kind == "compensation" and (
            e.applied or e.absorbed)}
        owed = [s.name for s in flow.compensations_for([s for s in landed])
                if s.name not in undone]
        if owed:
            return Verdict.FAILED, (f"reported compensated, but no compensation is in the "
                                    f"ledger for {', '.join(owed)}")
        if disorder := compensation_order(flow, _applied_order(flow, effects),
                                             _undone_order(effects)):
            return Verdict.FAILED, f"reported compensated, but {disorder[0]}"
        return Verdict.COMPENSATED, status.detail or "compensated"
    if status.state is InstanceState.FAILED:
        return Verdict.FAILED, status.detail or "the engine reports a failure"
    if engine_holds is None:
        # Lost or held: the checker cannot tell, and says why; either way it is no pass.
        return Verdict.STUCK, (f"unfinished ({status.state.value}) at the run's deadline; "
                               "cannot tell whether it is lost or still held: "
                               f"{cannot_tell or 'the engine could not say'}")
    if engine_holds:
        return Verdict.STUCK, (f"the engine still holds it ({status.state.value}"
                               f"{': ' + status.detail if status.detail else ''}) but it did "
                               "not finish before the run's deadline")
    done = ", ".join(status.done) or "nothing"
    return Verdict.LOST, (f"nothing holds it any more: the engine reports "
                          f"{status.state.value} after {done}, and no task, timer or "
                          "workflow is left to move it")


def _resume(flow: Flow, effects: Sequence[EffectRecord], reached: PointReached,
            fault_at: float, history: Sequence[HistoryEvent]) -> Resume:
    """Where the instance went on after the fault, given the node it was at: a step
    paused (or cut short) before or after its effect, or a wait."""
    steps = [s.name for s in flow.steps]
    after = [e for e in effects if e.started_at >= fault_at]
    first = after[0] if after else None
    # Steps that finished before the one in flight began (its branch's earlier steps, not
    # the other branches'); steps of the other branches of its group run beside it.
    before = set(flow.before(reached.step))
    beside = set(flow.beside(reached.step))
    landed = reached.point == "after-effect"
    again = before | ({reached.step} if landed else set()) | {
        e.step for e in effects if e.kind == "effect" and e.step in beside
        and e.started_at < fault_at and _landed(e)}
    reran = tuple(sorted({e.step for e in after if e.kind == "effect" and e.step in again},
                         key=steps.index))
    following = set(flow.following(reached.step))
    if reached.point == "during-wait":
        allowed = following
    else:
        # A branch beside it in flight may well make the first call after the fault.
        allowed = {reached.step} | beside
        if landed:
            # The effect had landed: going on with the next step is resuming exactly too.
            allowed |= following
    exact = (first is not None and first.kind == "effect" and first.step in allowed
             and not set(reran) & before)
    continued = _continued(effects, reached, fault_at, after)
    took_up, measured_from = None, ""
    if first is not None and not continued:
        took_up, measured_from = time_taken_up(history, first, fault_at)
    return Resume(
        in_flight=reached.step, point=reached.point,
        resumed_at=None if first is None else (
            first.step if first.kind == "effect" else f"{first.step} (compensation)"),
        exact=exact,
        time_to_resume=None if took_up is None else took_up - fault_at,
        reran=reran, continued=continued, measured_from=measured_from,
    )


def time_taken_up(history: Sequence[HistoryEvent], first: EffectRecord,
                  fault_at: float) -> tuple[float, str]:
    """When the instance's work was taken up again after the fault, and from which
    record: the engine's (the first event after the fault where it records a worker
    taking the work up: an activity or workflow task started, a redelivered task that
    began), else the ledger's first effect call after the fault. The engine's event
    comes no later than that call: a later one belongs to something else."""
    for event in history:
        if event.taken_up and fault_at <= event.at <= first.started_at:
            return event.at, measured_to(event)
    return first.started_at, "ledger: the first effect call after the fault"


def measured_to(event: HistoryEvent) -> str:
    """How a time to resume names the engine event it was measured to (`measured_from`)."""
    return "engine: " + (f"{event.kind} ({event.detail})" if event.detail else event.kind)


def _landed(effect: EffectRecord) -> bool:
    return effect.outcome in (Outcome.APPLIED, Outcome.ABSORBED)


def _applied_order(flow: Flow, effects: Sequence[EffectRecord]) -> tuple[str, ...]:
    """The steps whose effect landed, in the order each first landed (a wait's reminders
    and notices, which nothing compensates, left out)."""
    return tuple(dict.fromkeys(e.step for e in effects if e.kind == "effect" and _landed(e)
                               and not flow.is_wait_effect(e.step)))


def _undone_order(effects: Sequence[EffectRecord]) -> tuple[str, ...]:
    """The steps whose compensation landed, in the order each first landed."""
    return tuple(dict.fromkeys(e.step for e in effects
                               if e.kind == "compensation" and _landed(e)))


def business_key(record: InstanceRecord) -> str:
    """What identifies the commitment outside any engine: Dealix's key without the step,
    `{tenant_id}:{flow}:{entity_id}:{yyyymmdd}`."""
    return f"{record.tenant_id}:{record.flow}:{record.entity_id}:{record.date}"


def judge_starts(record: InstanceRecord, effects: Sequence[EffectRecord],
                 second: Sequence[SecondStart]) -> StartsVerdict:
    """Exactly one set of effects per business key, or a visible refusal.

    Each start carries a trace of its own, so the ledger tells the sets of effects apart.
    A second set is a duplicate commitment even when the idempotency keys absorbed every
    one of its effects: the flow ran twice, and only the external systems saved it."""
    key = business_key(record)
    sets = tuple(dict.fromkeys(e.trace_id for e in effects if _landed(e)))
    refused = tuple(s.refused for s in second if s.refused is not None)
    accepted = len(second) - len(refused)
    if len(sets) > 1:
        later = [e for e in effects if _landed(e) and e.trace_id in sets[1:]]
        absorbed = all(e.outcome is Outcome.ABSORBED for e in later)
        reason = (f"{len(sets)} sets of effects for business key {key}: "
                  f"{accepted} second start(s) accepted and run"
                  + (", every repeated effect absorbed by its idempotency key"
                     if absorbed else f", {sum(1 for e in later if e.outcome is Outcome.APPLIED)}"
                     " applied again"))
    elif refused:
        reason = f"one set of effects; the second start was refused: {refused[0]}"
    else:
        reason = "one set of effects; the second start was accepted but ran nothing"
    return StartsVerdict(business_key=key, starts=1 + len(second), refused=refused,
                         effect_sets=sets, reason=reason)


def judge_rollback(flow: Flow, effects: Sequence[EffectRecord], status: InstanceStatus,
                   cancelled_at: float) -> RollbackVerdict:
    """Compensation ran for exactly the steps that applied (whenever they landed, the
    step in flight included), in reverse order, once each; nothing applied after the
    compensation began; and the engine reports the instance compensated."""
    applied = _applied_order(flow, effects)
    undone = [e for e in effects if e.kind == "compensation" and _landed(e)]
    compensated = _undone_order(effects)
    declared = {s.name for s in flow.steps if s.compensation}
    read_only = {s.name for s in flow.steps if s.read_only}  # nothing of theirs to undo
    problems = []
    for step in applied:
        if step in read_only:
            continue
        if step not in declared:
            problems.append(f"{step} applied and has no compensation: the rollback cannot "
                            "undo it")
        elif step not in compensated:
            problems.append(f"the rollback left {step} applied and uncompensated")
    problems += [f"compensated {step}, which had not applied" for step in compensated
                 if step not in applied]
    problems += _compensated_twice(compensated, undone)
    problems += compensation_order(flow, applied, compensated)
    if undone:
        began = undone[0].started_at
        problems += [f"{e.step} applied {e.started_at - began:.2f}s after the compensation "
                     "began: it is left applied" for e in effects
                     if e.kind == "effect" and _landed(e) and e.started_at > began]
    problems += _not_compensated(status, "the cancellation")
    return RollbackVerdict(cancelled_at=cancelled_at, applied=applied,
                           compensated=compensated, problems=tuple(problems))


def _compensated_twice(compensated: Sequence[str],
                       undone: Sequence[EffectRecord]) -> list[str]:
    """A problem per step whose compensation applied more than once."""
    problems = []
    for step in compensated:
        times = sum(1 for e in undone if e.step == step and e.outcome is Outcome.APPLIED)
        if times > 1:
            problems.append(f"the compensation of {step} applied {times} times, not once")
    return problems


def _not_compensated(status: InstanceStatus, cause: str) -> list[str]:
    """The problem, if any, with the end the engine reports for an instance that `cause`
    (a cancellation, the interrupt) should have left compensated."""
    if status.state is InstanceState.COMPLETED:
        return [f"the instance completed: {cause} was not honoured"]
    if status.state is not InstanceState.COMPENSATED:
        detail = f" ({status.detail})" if status.detail else ""
        return [f"the engine reports {status.state.value} after {cause}{detail}, not compensated"]
    return []


def judge_interrupt(flow: Flow, effects: Sequence[EffectRecord], status: InstanceStatus,
                    interrupted_at: float | None) -> InterruptVerdict:
    """Once the interrupt was recorded (`interrupted_at`, when known) no step started;
    every step that applied, the one in flight included, was compensated exactly once,
    in reverse; and the engine reports the instance compensated. An instance that
    finished before the interrupt arrived (completed, nothing started after it) passes:
    there was nothing left to interrupt; unless a compensation or the notice also went
    out, which leaves the world neither completed nor compensated."""
    assert flow.interrupt is not None
    signal = flow.interrupt.signal
    applied = _applied_order(flow, effects)
    compensated = _undone_order(effects)
    undone = [e for e in effects if e.kind == "compensation" and _landed(e)]
    problems = [] if interrupted_at is None else _started_after(flow, effects, interrupted_at)
    if status.state is InstanceState.COMPLETED and not problems:  # finished first
        acted = _acted_on_interrupt(flow, effects, undone)
        return InterruptVerdict(signal, interrupted_at, applied, compensated, () if not acted
                                else (f"the instance completed, yet the interrupt was acted "
                                      f"on ({', '.join(acted)} ran): an interrupt either "
                                      "loses to completion or ends the instance compensated",))
    owed = {s.name for s in flow.steps if s.compensation}  # as `_outcome` owes them
    problems += [f"{step} applied and was left uncompensated" for step in applied
                 if step in owed and step not in compensated]
    problems += _compensated_twice(compensated, undone)
    problems += compensation_order(flow, applied, compensated)
    problems += _not_compensated(status, "the interrupt")
    return InterruptVerdict(signal, interrupted_at, applied, compensated, tuple(problems))


def _acted_on_interrupt(flow: Flow, effects: Sequence[EffectRecord],
                        undone: Sequence[EffectRecord]) -> list[str]:
    """The compensations and the interrupt's notice that landed."""
    assert flow.interrupt is not None
    notice = flow.interrupt.notice_step
    sent = [e.step for e in effects if e.kind == "effect" and _landed(e)
            and notice is not None and e.step == notice.name]
    return [*dict.fromkeys(e.step for e in undone), *sent]


def _started_after(flow: Flow, effects: Sequence[EffectRecord],
                   interrupted_at: float) -> list[str]:
    """Each step the engine started after the interrupt was recorded. The ledger shows
    when a worker began a call, not when the engine sent it: a step whose predecessors
    had all landed before the interrupt may have been sent before it (the step in
    flight), so a late start counts only when a step before it landed after the
    interrupt, which the engine cannot have sent it before."""
    steps = {s.name for s in flow.steps}
    landed_at: dict[str, float] = {}
    for effect in effects:
        if effect.kind == "effect" and effect.step in steps and _landed(effect):
            landed_at.setdefault(effect.step, effect.finished_at)
    problems = []
    for effect in effects:
        if (effect.kind != "effect" or effect.step not in steps or effect.attempt != 1
                or effect.started_at <= interrupted_at):
            continue
        later = [s for s in flow.before(effect.step)
                 if landed_at.get(s, interrupted_at) > interrupted_at]
        if later:
            problems.append(f"{effect.step} started {effect.started_at - interrupted_at:.2f}s "
                            f"after the interrupt was recorded, once {later[-1]} had landed "
                            "after it: no step may start once the interrupt is recorded")
    return problems


def compensation_order(flow: Flow, applied: Sequence[str],
                       compensated: Sequence[str]) -> list[str]:
    """A problem if the compensations (in the order they first landed) undid a step before
    one that applied after it: within a flow's order and within a branch the reverse is
    fixed; between parallel branches any order is right."""
    ran = [s for s in compensated if s in applied]
    if not any(earlier in flow.before(later) for i, later in enumerate(ran)
               for earlier in ran[:i]):
        return []
    expected = [s for s in reversed(applied) if s in compensated]
    loose = " (between parallel branches any order is right)" if flow.groups else ""
    return [f"compensations ran in the order {', '.join(ran)}; the steps applied in the "
            f"order {', '.join(applied)}, so the reverse is {', '.join(expected)}{loose}"]


def judge_acts(verdict: InstanceVerdict, flow: Flow, record: InstanceRecord,
               effects: Sequence[EffectRecord], status: InstanceStatus,
               acts: FaultActs) -> InstanceVerdict:
    """`verdict` with the judgements of what the fault did to this instance, if anything."""
    flow = flow.for_instance(record.request)  # the flow it ran, as in `judge_instance`
    iid = record.instance_id
    if iid in acts.second_starts:
        verdict = replace(verdict, starts=judge_starts(record, effects,
                                                       acts.second_starts[iid]))
    if iid in acts.cancelled:
        verdict = replace(verdict, rollback=judge_rollback(flow, effects, status,
                                                           acts.cancelled[iid]))
    return verdict


def _continued(effects: Sequence[EffectRecord], reached: PointReached, fault_at: float,
               after: Sequence[EffectRecord]) -> bool:
    """Whether the call at the fault point carried on in its own process and attempt.

    Before its effect: the first call after the fault is that step's, made by the
    process that was paused there, with the lowest attempt the step shows after the
    fault (a retry in the same process would come with a higher one). After its effect:
    the step never ran again, and the flow went on past it (a call killed there goes
    nowhere, or runs again).
    """
    if reached.point == "before-effect" and after and after[0].kind != "compensation":
        first = after[0]
        attempts = [e.attempt for e in after if e.step == reached.step and e.kind == "effect"]
        return (first.step == reached.step and first.worker_pid == reached.pid
                and first.attempt == min(attempts))
    if reached.point == "after-effect":
        calls = [e for e in effects if e.step == reached.step and e.kind == "effect"]
        return bool(calls) and calls[-1].started_at < fault_at and bool(after)
    return False


def interrupted(flow: Flow, effects: Sequence[EffectRecord],
                fault_at: float) -> PointReached | None:
    """The first step of an instance whose attempt the fault cut short, if any.

    The ledger shows it: after the fault, the step made a call with attempt n > 1, and
    no failed call of attempt n - 1 (a transient error the engine retried) explains
    it, so attempt n - 1 died, timed out or was redelivered. The point is after-effect
    when the step's effect had landed before the fault, else before-effect.
    """
    steps = [s.name for s in flow.steps]
    calls = [e for e in effects if e.kind == "effect"]
    for effect in sorted((e for e in calls if e.started_at >= fault_at and e.attempt > 1),
                         key=lambda e: (steps.index(e.step) if e.step in steps else 0,
                                        e.started_at)):
        previous = [e for e in calls if e.step == effect.step
                    and e.attempt == effect.attempt - 1]
        if any(e.outcome in (Outcome.TRANSIENT_ERROR, Outcome.PERMANENT_ERROR)
               for e in previous):
            continue
        earlier = [e for e in calls if e.step == effect.step and e.started_at < fault_at]
        landed = any(e.outcome in (Outcome.APPLIED, Outcome.ABSORBED) for e in earlier)
        # The process of the attempt cut short, where its call left a row (else unknown).
        pid = earlier[-1].worker_pid if earlier else 0
        return PointReached(effect.instance_id, effect.step,
                            "after-effect" if landed else "before-effect", pid, fault_at)
    return None


@dataclass(frozen=True)
class FaultFacts:
    """What became of the planned fault: whether one was planned and fired (and why
    not), and whether it fires with a step in flight (so a resume is to be seen)."""

    planned: bool
    fired: bool
    expects_resume: bool
    reason: str = ""


def proves_nothing(fault: FaultFacts, hit_by_fault: int) -> str | None:
    """Why a run shows nothing about surviving its fault, or None: the fault never fired,
    or it caught no instance in flight (so no resume was seen)."""
    if fault.planned and not fault.fired:
        return f"the fault never fired ({fault.reason or 'no reason given'})"
    if fault.expects_resume and not hit_by_fault:
        return ("no instance was caught in flight, so it shows no resume; fire the fault "
                "at STEP:before-effect, STEP:after-effect or WAIT:during-wait")
    return None


def _cut_short_by_engine(effects: Sequence[EffectRecord], history: Sequence[HistoryEvent],
                         fault_at: float) -> PointReached | None:
    """Where an instance went on after the engine recorded one of its attempts cut short
    after the fault (a workflow task that timed out on a dead worker, say), though no
    effect call of it was: the first step it ran after that."""
    if not any(e.cut_short and e.at >= fault_at for e in history):
        return None
    return _went_on(effects, fault_at)


def held_up(record: InstanceRecord, effects: Sequence[EffectRecord], status: InstanceStatus,
            history: Sequence[HistoryEvent], fault_at: float, recovered_at: float | None,
            ran_before_fault: Collection[int] = ()) -> PointReached | None:
    """Where an instance went on whose work waited for the fault's recovery, though none
    of its attempts was cut short: the first step it ran after the fault.

    The engine records it (a message the lost worker had only taken, a workflow task on
    its sticky queue), or the timing shows it: the instance was in flight when the fault
    fired (started, not finished) and made no effect call until the recovery began, and
    then on a process that made none before the fault (`ran_before_fault`): a worker that
    outlived the fault and took the instance up late was busy, not waiting for the
    recovery.
    """
    went_on = _went_on(effects, fault_at)
    if went_on is None:
        return None
    if any(e.held_up and e.at >= fault_at for e in history):
        return went_on
    in_flight = record.started_at < fault_at and (
        status.finished_at is None or status.finished_at > fault_at)
    first = min((e for e in effects if e.started_at >= fault_at), key=lambda e: e.started_at)
    if (in_flight and recovered_at is not None and first.started_at >= recovered_at
            and first.worker_pid not in ran_before_fault):
        return went_on
    return None


def _went_on(effects: Sequence[EffectRecord], fault_at: float) -> PointReached | None:
    after = [e for e in effects if e.kind == "effect" and e.started_at >= fault_at]
    if not after:
        return None
    return PointReached(after[0].instance_id, after[0].step, "before-effect", 0, fault_at)


def judge_run(instances: Sequence[InstanceVerdict], *, require_exact_resume: bool = True,
              fault: FaultFacts | None = None, not_started: int = 0) -> RunVerdict:
    """Counts, and the required properties: nothing lost, stuck or failed (a failed
    commitment is neither done nor undone), no unabsorbed duplicate, every instance
    hit by the fault resumed at the step in flight, one set of effects per business key,
    every rollback complete, every effect call carried its instance's correlation and
    trace IDs (the audit trail holds together), the audit trail the team's systems kept
    has a whole record of each commitment, and (given `fault`) the fault fired and
    caught an instance in flight: a run that shows nothing is no pass. `not_started`
    instances of the run were never started: its deadline passed while it started them."""
    counts = {v.value: sum(1 for i in instances if i.verdict is v) for v in Verdict}
    failures = []
    if not_started:
        failures.append(f"{not_started} of the run's {not_started + len(instances)} "
                        "instance(s) never started: the run's deadline passed first; give "
                        "it a longer --timeout or fewer --instances")
    for item in instances:
        if item.verdict.fails_run:
            failures.append(f"{item.instance_id} {item.verdict}: {item.reason} "
                            f"({item.correlation_id})")
        failures += [duplicate_failure(item, effect) for effect in item.effects
                     if effect.unabsorbed_duplicates]
        if require_exact_resume and item.resume is not None and not item.resume.exact:
            failures.append(
                f"{item.instance_id}: in flight at {item.resume.in_flight}, resumed at "
                f"{item.resume.resumed_at or 'nothing'}, not at the exact step "
                f"({item.correlation_id})")
        if item.starts is not None and not item.starts.passed:
            failures.append(f"{item.instance_id}: duplicate commitment: {item.starts.reason} "
                            f"({item.correlation_id})")
        if item.rollback is not None:
            failures += [f"{item.instance_id}: rollback: {problem} ({item.correlation_id})"
                         for problem in item.rollback.problems]
        if item.correlation_breaks:
            failures.append(f"{item.instance_id}: {correlation_failure(item.correlation_breaks)}"
                            f" ({item.correlation_id})")
        failures += [f"{item.instance_id}: audit trail: {gap} ({item.correlation_id})"
                     for gap in item.audit_gaps]
        # A reminder sent twice is already an unabsorbed duplicate above.
        failures += [f"{item.instance_id}: {r.describe()} ({item.correlation_id})"
                     for r in item.reminders if r.problem]
        # A notice sent twice is already an unabsorbed duplicate above.
        failures += [f"{item.instance_id}: {n.describe()} ({item.correlation_id})"
                     for n in item.notices if n.problem]
    hit = [i for i in instances if i.resume is not None]
    # An instance only held up shows a delay, not that an attempt in flight was resumed.
    caught = sum(1 for i in hit if i.resume is not None and not i.resume.held_up)
    if fault is not None and (nothing := proves_nothing(fault, caught)) is not None:
        failures.append(nothing)
    return RunVerdict(
        counts=counts,
        unabsorbed_duplicates=sum(i.unabsorbed_duplicates for i in instances),
        absorbed_duplicates=sum(i.absorbed for i in instances),
        resumed_exactly=sum(1 for i in hit if i.resume is not None
                            and i.resume.resumed_exactly),
        hit_by_fault=len(hit),
        failures=tuple(failures),
        correlation_breaks=sum(len(i.correlation_breaks) for i in instances),
        interrupted=sum(1 for i in hit if i.resume is not None and i.resume.interrupted),
        held_up=sum(1 for i in hit if i.resume is not None and i.resume.held_up),
    )


def audit_trail(record: InstanceRecord, effects: Sequence[EffectRecord],
                kept: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """What is missing or broken in the audit trail a team's systems `kept` for one
    instance: each effect call that applied (changed the world) needs a record of its
    own, its event_type the effect's name, that carries the instance's correlation and
    trace IDs and holds the envelope's minimum fields (`graduate.audit`)."""
    records = list(kept)
    gaps = []
    for name in dict.fromkeys(e.effect for e in effects if e.outcome is Outcome.APPLIED):
        applied = sum(1 for e in effects if e.effect == name and e.outcome is Outcome.APPLIED)
        found = [r for r in records if r.get("event_type") == name]
        if len(found) < applied:
            gaps.append(f"{name} applied {applied} time(s) but its system kept "
                        f"{len(found)} audit record(s): {applied - len(found)} missing")
        for item in found:
            which = f"the audit record {item.get('event_id') or '(no event_id)'} of {name}"
            for key, expected in (("correlation_id", record.correlation_id),
                                  ("trace_id", record.trace_id)):
                if item.get(key) != expected:
                    gaps.append(f"{which} carries {key} {item.get(key) or 'none'}, not the "
                                f"instance's {expected}")
            gaps += [f"{which} breaks the envelope: {problem}"
                     for problem in audit.envelope_problems(item)]
    return tuple(gaps)


def judge_audit(verdict: InstanceVerdict, record: InstanceRecord,
                effects: Sequence[EffectRecord],
                read: Callable[[], Iterable[Mapping[str, Any]]]) -> InstanceVerdict:
    """`verdict` with the gaps in the audit trail that `read` returns (the team's own
    reader: an error of it is a gap too, since then no trail can be shown)."""
    try:
        kept = list(read())
    except Exception as error:  # the team's reader may fail in any way
        return replace(verdict, audit_gaps=(
            f"the app's audit reader failed: {type(error).__name__}: {error}",))
    return replace(verdict, audit_gaps=audit_trail(record, effects, kept))


def correlation_failure(breaks: Sequence[CorrelationBreak]) -> str:
    """In words: which calls carried another correlation or trace ID than the instance's."""
    calls = "; ".join(f"{b.step} attempt {b.attempt} has {b.field} {b.found or 'none'}"
                      for b in breaks)
    return (f"{len(breaks)} ID(s) of its effect calls differ from the instance's, so "
            f"correlation or trace propagation broke: {calls}")
