"""Hazards visible in the code: settings and patterns with a known failure.

Each rule says where (file:line), why it fails with the settings the code has (or the
engine's default, said as such), and what would fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from graduate.migrate.inventory.config import CelerySettings
from graduate.migrate.inventory.model import Hazard, Location, Severity
from graduate.migrate.inventory.project import INLINE, Project, Task, reached
from graduate.migrate.inventory.signs import crash_prone
from graduate.migrate.inventory.values import seconds


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str


RULES: tuple[Rule, ...] = (
    Rule("eta-beyond-visibility-timeout", Severity.HIGH,
         "Countdown or ETA longer than the Redis visibility timeout"),
    Rule("time-limit-beyond-visibility-timeout", Severity.HIGH,
         "Late-acked task may run longer than the Redis visibility timeout"),
    Rule("late-ack-without-idempotency", Severity.MEDIUM,
         "Late acknowledgement without an idempotency key"),
    Rule("reject-on-worker-lost-loop", Severity.HIGH,
         "reject_on_worker_lost with late ack on a task that can kill its worker"),
    Rule("consumer-timeout-below-time-limit", Severity.HIGH,
         "RabbitMQ consumer_timeout shorter than a late-acked task's time limit"),
    Rule("eta-beyond-consumer-timeout", Severity.HIGH,
         "Countdown or ETA longer than RabbitMQ's consumer_timeout"),
    Rule("two-sources-of-truth", Severity.HIGH,
         "The same external commitment driven from a Celery task and from a workflow"),
    Rule("eta-not-known", Severity.LOW,
         "Countdown or ETA whose length is known only at run time"),
    Rule("unrecorded-task-chain", Severity.MEDIUM,
         "A chain of tasks started one by one under early acknowledgement, recorded nowhere"),
)
_RULES = {rule.id: rule for rule in RULES}
LATE_ACK = "late-ack-without-idempotency"
TASK_CHAIN = "unrecorded-task-chain"
# A hand-off of this many tasks or more is a pipeline: one follow-up (`notify.delay()`) is not.
CHAIN_TASKS = 3
_LATE_ACK_FIX = ("pass an idempotency key derived from the business entity (for example "
                 "{tenant_id}:{flow}:{entity_id}:{step}) to every external call, and have the "
                 "system (or a unique row) refuse a second use")
_Add = Callable[[str, Task, Location, str, str], None]

# Celery retries a task 3 times, 180 s apart, unless told otherwise
# (docs.celeryq.dev/en/stable/userguide/tasks.html#Task.max_retries, #Task.default_retry_delay).
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 180.0


def option(project: Project, task: Task, key: str) -> tuple[object, Location | None]:
    """A task option, from the task itself or else from the app's `task_<key>` setting."""
    if key in task.options:
        return task.options[key], task.origin(key)
    setting = project.settings_for(task).get(f"task_{key}")
    return (setting.value, setting.location) if setting else (None, None)


def time_limit(project: Project, task: Task) -> tuple[float | None, Location | None, bool]:
    """The longest the task may run: (seconds, where set, whether it is the hard limit)."""
    hard, hard_at = option(project, task, "time_limit")
    if (limit := seconds(hard)) is not None:
        return limit, hard_at, True
    soft, soft_at = option(project, task, "soft_time_limit")
    return seconds(soft), soft_at, False


class _Broker:
    """The broker facts one task runs with, and how a message names them."""

    def __init__(self, settings: CelerySettings) -> None:
        self.redis = settings.broker in ("redis", "unknown")
        self.rabbitmq = settings.broker == "rabbitmq"
        self.vt = settings.visibility_timeout
        self.vt_text = (f"{self.vt:g} s, set at {settings.visibility_timeout_at}"
                        if settings.visibility_timeout_at else f"{self.vt:g} s, Celery's default")
        if settings.broker == "unknown":
            self.vt_text += "; no broker URL found, Redis assumed"
        self.ct = settings.consumer_timeout
        self.ct_text = (f"{self.ct:g} s, set at {settings.consumer_timeout_at}"
                        if settings.consumer_timeout_at else f"{self.ct:g} s, RabbitMQ's default")


def hazards(project: Project) -> list[tuple[Task, Hazard]]:
    """Every hazard found, with the task it concerns, in file and line order; a hazard
    of an app's setting comes once for each task it covers."""
    found: list[tuple[Task, Hazard]] = []
    by_setting: dict[Location, list[Task]] = {}
    seen: set[Hazard] = set()

    def add(rule_id: str, task: Task, where: Location, why: str, fix: str) -> None:
        rule = _RULES[rule_id]
        hazard = Hazard(rule.id, rule.severity, task.short, where, why, fix)
        if hazard not in seen:
            seen.add(hazard)
            found.append((task, hazard))

    _delay_hazards(project, add)
    for task in project.tasks:
        acks_late, acks_at = option(project, task, "acks_late")
        if acks_late is not True:
            continue
        limit, limit_at, hard = time_limit(project, task)
        where = limit_at or task.location
        broker = _Broker(project.settings_for(task))
        vt, vt_text, ct, ct_text = broker.vt, broker.vt_text, broker.ct, broker.ct_text
        if broker.redis and limit is not None and limit > vt:
            add("time-limit-beyond-visibility-timeout", task, where,
                f"{task.short} is acknowledged late (set at {acks_at}) and may run "
                f"{limit:g} s, longer than the Redis visibility timeout ({vt_text}): while it "
                "still runs, Redis redelivers it to another worker, and it runs twice",
                f"raise broker_transport_options['visibility_timeout'] above {limit:g} s, "
                "or lower the time limit below it")
        if broker.rabbitmq and limit is not None and limit > ct:
            add("consumer-timeout-below-time-limit", task, where,
                f"{task.short} is acknowledged late and may run {limit:g} s, longer than "
                f"consumer_timeout ({ct_text}): RabbitMQ closes the channel mid-task and "
                "redelivers the message, so it runs again",
                f"raise consumer_timeout above {limit:g} s for its queue, or lower the time "
                "limit")
        # A task that claims its row before any call out (a locked read checking the
        # state, or a compare-and-set update, committed) does nothing when its message
        # is delivered again.
        if not task.idempotent and not project.claims_first(task):
            if "acks_late" in task.options or acks_at is None:
                add(LATE_ACK, task, task.location, _late_ack_why(task.short, acks_at),
                    _LATE_ACK_FIX)
            else:  # the app's setting: one hazard for the app, below
                by_setting.setdefault(acks_at, []).append(task)
        # A hard time limit terminates the pool process and replaces it
        # (docs.celeryq.dev/en/stable/userguide/workers.html#time-limits); with
        # reject_on_worker_lost the message is requeued, and "enabling this can cause message
        # loops" (docs.celeryq.dev/en/stable/userguide/configuration.html
        # #task-reject-on-worker-lost).
        reject, reject_at = option(project, task, "reject_on_worker_lost")
        crash = crash_prone(project, task)
        if reject is True and (hard or crash is not None):
            cause = (f"a hard time limit of {limit:g} s (set at {limit_at}) kills its pool "
                     "process when reached" if hard and limit is not None
                     else f"it calls code that can end its process (at {crash})")
            add("reject-on-worker-lost-loop", task, reject_at or task.location,
                f"{task.short} has late ack and reject_on_worker_lost (set at {reject_at}); "
                f"{cause}; the message is then requeued and the same task kills the next "
                "worker too: a redelivery loop (Celery warns that this setting can cause "
                "message loops)",
                "drop reject_on_worker_lost for this task, or count deliveries (a retry "
                "counter in the message or a row) and stop requeueing after a few")

    _late_acks_of_an_app(by_setting, add, found)
    _two_sources(project, add)
    _task_chains(project, found)
    return sorted(found, key=lambda pair: (pair[1].location, pair[1].rule))


def _delay_hazards(project: Project, add: _Add) -> None:
    """Countdowns, ETAs and retry delays longer than the broker holds a message unacked."""
    delays = [(launch.task, launch.location, launch.delay, launch.how)
              for launch in project.launches if launch.delay]
    delays += [(task, where, delay, "retry") for task, delay, where in project.retries if delay]
    for task in project.tasks:
        retry_kwargs = task.options.get("retry_kwargs")
        if isinstance(retry_kwargs, dict) and (delay := seconds(retry_kwargs.get("countdown"))):
            delays.append((task, task.location, delay, "retry_kwargs countdown"))
    for task, where, delay, how in delays:
        assert delay is not None
        broker = _Broker(project.settings_for(task))
        vt, vt_text, ct, ct_text = broker.vt, broker.vt_text, broker.ct, broker.ct_text
        if broker.redis and delay > vt:
            copies = int(delay // vt) + 1
            add("eta-beyond-visibility-timeout", task, where,
                f"{how} of {task.short} waits {delay:g} s, longer than the Redis visibility "
                f"timeout ({vt_text}): the worker holds the message unacknowledged until its "
                f"ETA, Redis restores it every {vt:g} s and another worker takes it too, so up "
                f"to {copies} copies run at the ETA",
                f"raise broker_transport_options['visibility_timeout'] above {delay:g} s on "
                "every producer and worker, or keep the wait out of the broker (a durable "
                "timer, or a periodic sweep of due rows)")
        if broker.rabbitmq and delay > ct:
            add("eta-beyond-consumer-timeout", task, where,
                f"{how} of {task.short} waits {delay:g} s; the worker holds the delivery "
                f"unacknowledged until then, longer than consumer_timeout ({ct_text}): RabbitMQ "
                "closes the channel (PRECONDITION_FAILED) and the message is redelivered",
                f"raise consumer_timeout above {delay:g} s (rabbitmq.conf or the queue's "
                "x-consumer-timeout), or keep the wait out of the broker")

    for launch in project.launches:
        if launch.unknown_delay is None or launch.delay:
            continue
        broker = _Broker(project.settings_for(launch.task))
        bound = (f"the Redis visibility timeout ({broker.vt_text})" if broker.redis
                 else f"RabbitMQ's consumer_timeout ({broker.ct_text})" if broker.rabbitmq
                 else "the broker's redelivery timeout")
        add("eta-not-known", launch.task, launch.location,
            f"{launch.how} of {launch.task.short} waits {launch.unknown_delay}, known only at "
            f"run time: if it can exceed {bound}, the message is redelivered while it waits "
            "and the task runs more than once",
            "bound the wait below that timeout, or keep long waits out of the broker (a "
            "durable timer, or a periodic sweep of due rows)")


def _late_acks_of_an_app(by_setting: dict[Location, list[Task]], add: _Add,
                         found: list[tuple[Task, Hazard]]) -> None:
    """The tasks acknowledged late by an app's task_acks_late, without an idempotency key.
    One setting, one decision: named once, at the setting, with the tasks it covers
    (readthedocs had 45 hazards, one per task, for one line of settings)."""
    for setting_at, tasks in by_setting.items():
        if len(tasks) == 1:
            add(LATE_ACK, tasks[0], tasks[0].location, _late_ack_why(tasks[0].short, setting_at),
                _LATE_ACK_FIX)
            continue
        names = sorted(task.short for task in tasks)
        hazard = Hazard(LATE_ACK, _RULES[LATE_ACK].severity, f"{len(names)} tasks",
                        setting_at,
                        f"task_acks_late = True (set at {setting_at}) acknowledges every task "
                        "of the app late, so a crash or redelivery runs it again, and nothing "
                        f"in these {len(names)} names an idempotency key: their effects can "
                        f"apply twice: {', '.join(names)}",
                        _LATE_ACK_FIX + "; or set acks_late=True only on the tasks that are "
                        "safe to run twice")
        found.extend((task, hazard) for task in tasks)  # each task's flow counts it


def _task_chains(project: Project, found: list[tuple[Task, Hazard]]) -> None:
    """Tasks that each start the next themselves (`next_step.apply_async()` at the end of
    a task, no canvas) under early acknowledgement, with no state written anywhere in
    the chain. The message of a running step is acknowledged before it runs: a worker
    that dies mid-step loses that step and, since only the step starts the next, every
    later one, and nothing tells how far an instance got (Mayan EDMS's upload runs eight
    tasks so). One hazard for each chain of CHAIN_TASKS tasks or more, followed from
    each entry along the calls, at its first hand-off, counted only by the flows its
    entries start (the flows holding them)."""
    onward: dict[int, list[Task]] = {}
    hand_offs: dict[int, list[Location]] = {}  # where each task starts the next
    tasks: dict[int, Task] = {}
    for launch in project.launches:
        caller = launch.caller
        if (caller is None or caller is launch.task or launch.how == INLINE
                or launch.how.endswith(" start")  # a canvas: declared in one place
                or option(project, caller, "acks_late")[0] is True):
            continue
        onward.setdefault(id(caller), []).append(launch.task)
        hand_offs.setdefault(id(caller), []).append(launch.location)
        tasks[id(caller)], tasks[id(launch.task)] = caller, launch.task
    started = {id(t) for afters in onward.values() for t in afters}
    entries = sorted((t for t in tasks.values() if id(t) not in started),
                     key=lambda t: t.location)
    # A loop of tasks that only start one another has no entry: its first task in the
    # code stands for one, and so on until every task is reached.
    covered = {id(t) for t in reached(entries, onward)[0]}
    for task in sorted(tasks.values(), key=lambda t: t.location):
        if id(task) not in covered:
            entries.append(task)
            covered |= {id(t) for t in reached([task], onward)[0]}
    # Each entry's chain along the calls, as flows.group makes one flow per entry: a task
    # two entries start (a shared e-mail) is a step of each, not a link between them.
    # Entries that start the same tasks (two ways into one upload pipeline) are one chain.
    chains: dict[frozenset[int], tuple[list[Task], list[Task]]] = {}
    for entry in entries:
        order, depth = reached([entry], onward)
        if depth < CHAIN_TASKS or project.among(project.status_writes, order) or (
                project.among(project.sweeps, order)):
            continue  # a short hand-off, or a chain whose progress a row records
        starts, _ = chains.setdefault(frozenset(id(t) for t in order[1:]), ([], order[1:]))
        starts.append(entry)
    for starts, rest in chains.values():
        first = min(where for t in [*starts, *rest] for where in hand_offs.get(id(t), ()))
        names = " -> ".join([" / ".join(t.short for t in starts), *(t.short for t in rest)])
        who = (f"{starts[0].short} and the {len(rest)} tasks it starts" if len(starts) == 1
               else f"{', '.join(t.short for t in starts)} and the {len(rest)} tasks they "
               "start")
        hazard = Hazard(
            TASK_CHAIN, _RULES[TASK_CHAIN].severity, who, first,
            f"{len(starts) + len(rest)} tasks start one another one by one ({names}), each "
            "acknowledged before it runs (Celery's default, acks_late not set): a worker "
            "that dies "
            "mid-step loses that step and every later one, since only the step starts the "
            "next; no status is written, so nothing tells how far an instance got or "
            "resumes it at that step, and no retry or dead-letter queue sees the loss",
            "record each instance's step in a row and resume unfinished ones from a "
            "periodic sweep, or set acks_late=True with reject_on_worker_lost on these "
            "tasks once each is safe to run twice; a flow that must resume at the exact "
            "step is what a workflow engine keeps")
        found.extend((entry, hazard) for entry in starts)  # the flows they start count it


def _late_ack_why(task: str, acks_at: Location | None) -> str:
    return (f"{task} is acknowledged late (set at {acks_at}), so a crash or redelivery runs "
            "it again, and nothing in it names an idempotency key: its effects can apply "
            "twice")


def _two_sources(project: Project, add: _Add) -> None:
    """The same external commitment reachable from a Celery task and from a workflow."""
    symbols = project.symbols
    for label, owner, qualname, _ in project.workflows:
        workflow_effects = _reach(project.effects(owner, qualname))
        for task in project.tasks:
            task_effects: dict[str, tuple[Location, int]] = {}
            for body in task.bodies:
                task_effects.update(_reach(project.effects(task.facts, body)))
            common = sorted(c for c in set(task_effects) & set(workflow_effects)
                            if symbols.find(c) is not None
                            or (task_effects[c][1] == 0 and workflow_effects[c][1] == 0))
            for callee in _outermost(project, common):
                add("two-sources-of-truth", task, task_effects[callee][0],
                    f"{callee} is called from Celery task {task.short} "
                    f"({task_effects[callee][0]}) and from {label} "
                    f"({workflow_effects[callee][0]}): "
                    "two sources of truth for \"what step are we on?\"; a retry on one side "
                    "does not know the other already committed",
                    "drive this commitment from one engine only; if both must exist during a "
                    "migration, let one side call the other and share one idempotency key")


def _reach(effects: Iterable[tuple[str, Location, int]]) -> dict[str, tuple[Location, int]]:
    """Each callee once, where it is first reached and how deep (0: called directly)."""
    found: dict[str, tuple[Location, int]] = {}
    for callee, where, depth in effects:
        if callee not in found or depth < found[callee][1]:
            found[callee] = (where, depth)
    return found


def _outermost(project: Project, common: list[str]) -> list[str]:
    """Drop a shared callee reached only through another shared one (report the helper
    both sides call, not every library call inside it)."""
    inner: set[str] = set()
    for callee in common:
        owner = project.symbols.defined.get(callee)
        if owner is None:
            continue
        inner |= {c for c, _, _ in project.effects(owner, callee.rsplit(".", 1)[-1])}
    return [c for c in common if c not in inner]
