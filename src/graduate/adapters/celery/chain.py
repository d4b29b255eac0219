"""Strategy "chain": the flow as linked Celery tasks, the way most Celery code is written.

Each node is one task with a deterministic ID, `{instance}:{node}`, and the context (the
request and the nodes passed) travels as each task's return value to the next. A chain
runs up to a wait; the wait parks its context in Redis (the task of the step right
before it does, once its effect landed; a wait after anything else is a task of its
own), and whichever of the signal and the deadline claims the wait first (`SET NX`)
sends the rest as a new chain with the same IDs; a signal task that claims it runs the
step after the wait itself first, as a team's approval handler does
(`ChainTasks.run_carried`). A parallel group is a chord: each branch a chain of its
steps in the chord's header, and a `join` task as its body that sends the rest; the
join's error callback (`link_error`), which Celery calls once every branch has ended
when one failed, sends the compensation of every step that applied. The flow's
interrupt is a key in Redis, written by whoever sends it before the send returns: every
step, timer and `finish` looks for it before it runs (and then stops the chain and
sends the compensations in its place; a step redelivered after its worker died
finishes first), a wait looks for it once parked, and the interrupt's signal task ends
a wait already parked. One recorded after `finish` looked loses to completion. Nothing
else records progress: `status()` reads Celery's result backend and the wait keys
only, which is all that an operator of such a system has to go on.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, cast

import redis
from celery import Celery
from celery import chain as celery_chain
from celery import chord as celery_chord
from celery.exceptions import Retry, SoftTimeLimitExceeded

from graduate.adapters.base import HeldUp, HistoryEvent, InstanceState, InstanceStatus
from graduate.adapters.celery.broker import BrokerView, message_task_id
from graduate.adapters.celery.receipts import (
    PING_TIMEOUT,
    REDIS_HANDOVER,
    consumers_holding,
    proven_dead,
    received_key,
    taker_of,
    unacknowledged,
)
from graduate.adapters.celery.resources import ProcessResources
from graduate.errors import (
    CannotTell,
    EngineError,
    PermanentEffectError,
    TransientEffectError,
)
from graduate.flow import (
    Flow,
    InstanceInput,
    InstanceRequest,
    Interrupt,
    Node,
    Parallel,
    Step,
    Timer,
    Wait,
    WhileOpenKind,
)
from graduate.ledger import EffectKind

ENGINE = "celery-chain"

STEP = "graduate.chain.step"
WAIT = "graduate.chain.wait"
TIMER = "graduate.chain.timer"
TASK_PREFIX = "graduate.chain."
SIGNAL = "graduate.chain.signal"
DEADLINE = "graduate.chain.deadline"
REMINDER = "graduate.chain.reminder"
COMPENSATE = "graduate.chain.compensate"
NOTICE = "graduate.chain.notice"
FINISH = "graduate.chain.finish"
JOIN = "graduate.chain.join"
BRANCH_FAILED = "graduate.chain.branch_failed"

# Celery's hard limit kills the pool child; the soft limit (the step's timeout) comes
# first, so that the task can count it as a transient failure and retry.
HARD_LIMIT_SLACK = 5.0
# Wait keys outlive their deadline by Celery's default result lifetime (one day), so that
# status() can still explain a finished wait as long as the task results exist.
KEY_LIFETIME = 86400
# holds() looks again while the instance's record moved during a look (a task finished,
# started, or a wait was decided), at most this many times; an instance still moving
# after that is held by whatever moves it.
HOLD_LOOKS = 5
# A worker that did not answer is not asked again for this long, so that the instances
# of a run whose worker died cost one ping between them, not one each.
SILENT_FOR = 10.0

Context = dict[str, Any]  # {"request": InstanceRequest as dict, "done": [node names]}


# ---------------------------------------------------------------------------- IDs and keys


def task_id(instance_id: str, *parts: str) -> str:
    return ":".join((instance_id, *parts))


def _key(instance_id: str, kind: str, name: str) -> str:
    return f"graduate:chain:{instance_id}:{kind}:{name}"


def context_key(instance_id: str, wait: str) -> str:
    return _key(instance_id, "context", wait)


def signal_key(instance_id: str, signal: str) -> str:
    return _key(instance_id, "signal", signal)


def claim_key(instance_id: str, wait: str) -> str:
    return _key(instance_id, "claim", wait)


def send_key(instance_id: str, wait: str, kind: str) -> str:
    """Who sends the wait's reminder or escalation (`kind`): a lease while a delivery of
    its countdown task sends it, then the mark that it was sent (see
    `ChainTasks.reminder`)."""
    return _key(instance_id, "send", f"{wait}.{kind}")


# How many skipped deliveries `send_skips_key` keeps, the latest.
SKIPS_KEPT = 100


def send_skips_key(instance_id: str, wait: str, kind: str) -> str:
    """The deliveries of the wait's reminder or escalation task that did not send it (a
    list, oldest first, the last `SKIPS_KEPT`): another delivery had it in hand, or had
    sent it."""
    return _key(instance_id, "send-skipped", f"{wait}.{kind}")


def send_skips(client: redis.Redis, instance_id: str, wait: str,
               kind: str) -> list[dict[str, Any]]:
    """What `send_skips_key` holds: `{"at", "why", "redelivered"}` a skipped delivery."""
    raws = cast(list[bytes], client.lrange(send_skips_key(instance_id, wait, kind), 0, -1))
    return [json.loads(raw) for raw in raws]


def cancel_key(instance_id: str) -> str:
    return _key(instance_id, "cancel", "operator")


def interrupt_key(instance_id: str) -> str:
    return _key(instance_id, "interrupt", "signal")


def record_interrupt(client: redis.Redis, flow: Flow, instance_id: str) -> None:
    """Record that the flow's interrupt arrived for the instance (the first arrival
    stands): durable as soon as this returns, whatever becomes of the task that acts
    on it. The key outlives every wait and timer of the flow."""
    lifetime = int(sum(w.deadline for w in flow.waits)
                   + sum(n.duration for n in flow.nodes if isinstance(n, Timer))) + KEY_LIFETIME
    client.set(interrupt_key(instance_id), json.dumps({"at": time.time()}), nx=True,
               ex=lifetime)


class Claimed(IntEnum):
    """What `ChainTasks.resolve` did with a wait: false when another claim stood."""

    NOT = 0  # another signal, deadline or interrupt had claimed it
    SENT = 1  # claimed: what follows was sent as tasks of its own
    RAN_STEP = 2  # claimed by a signal task that ran the step after the wait itself


class Interrupted(Exception):
    """A task of an interrupted instance that did not run its node, with the
    interrupt's reason: Celery records the node as not passed, and a failed branch
    makes the chord's error callback send the compensations."""


def deliveries_key(instance_id: str, task: str, retries: int) -> str:
    """When each delivery of one task message (a step, or a compensation) began: Celery
    sends a new message per retry, and the broker redelivers one whose worker died."""
    return _key(instance_id, "deliveries", f"{task}:{retries}")


def new_context(request: InstanceRequest) -> Context:
    return {"request": asdict(request), "done": []}


def _request(ctx: Context) -> InstanceRequest:
    return InstanceRequest(**ctx["request"])


def _instance(ctx: Context) -> str:
    return str(ctx["request"]["instance_id"])


def _passed(ctx: Context, node: str) -> Context:
    return {**ctx, "done": [*ctx["done"], node]}


def _load(client: redis.Redis, key: str) -> Any:
    raw = client.get(key)
    return None if raw is None else json.loads(raw)


def _describe(error: BaseException, step: Step) -> str:
    if isinstance(error, SoftTimeLimitExceeded):
        return f"timed out after {step.timeout:g}s"
    return str(error) or type(error).__name__


# ---------------------------------------------------------------------------- canvas


def _limits(step: Step) -> dict[str, float]:
    return {"soft_time_limit": step.timeout, "time_limit": step.timeout + HARD_LIMIT_SLACK}


def _node_signature(app: Celery, ctx: Context, node: Step | Wait | Timer,
                    then_wait: Wait | None = None, *, then_finish: bool = False) -> Any:
    iid = _instance(ctx)
    if isinstance(node, Step):
        kwargs: dict[str, Any] = {"node": node.name}
        kwargs |= {"then_wait": then_wait.name} if then_wait else {}
        kwargs |= {"then_finish": True} if then_finish else {}
        return app.signature(STEP, kwargs=kwargs, task_id=task_id(iid, node.name),
                             **_limits(node))
    if isinstance(node, Wait):
        return app.signature(WAIT, kwargs={"node": node.name}, task_id=task_id(iid, node.name))
    # The timer's own task carries the countdown: its predecessor sends it to run late, and
    # the rest of the chain follows it, so the timer counts as passed once it has run.
    return app.signature(TIMER, kwargs={"node": node.name}, task_id=task_id(iid, node.name),
                         countdown=node.duration)


def _finish_signature(app: Celery, ctx: Context, outcome: str, reason: str) -> Any:
    return app.signature(FINISH, kwargs={"outcome": outcome, "reason": reason},
                         task_id=task_id(_instance(ctx), "finish"))


def _first_takes(signatures: list[Any], ctx: Context) -> Any:
    # Later tasks receive the context as their predecessor's return value.
    signatures[0].args = (ctx,)
    return celery_chain(*signatures)


def _chord(app: Celery, ctx: Context, group: Parallel, *, first: bool) -> Any:
    """The group as a chord: a chain per branch, all given the context that reaches the
    group; `join` receives their contexts. The error callback is on the body task itself:
    Celery finds a chord's errbacks on its body's options, not inside a chained body."""
    iid = _instance(ctx)
    branches = []
    for branch in group.branches:
        steps = [_node_signature(app, ctx, step) for step in branch.steps]
        if first:  # no task before the group hands it the context
            steps[0].args = (ctx,)
        branches.append(celery_chain(*steps))
    failed = app.signature(BRANCH_FAILED, task_id=task_id(iid, group.name, "failed"))
    join = app.signature(JOIN, kwargs={"node": group.name}, task_id=task_id(iid, group.name))
    return celery_chord(branches, join.on_error(failed))


def part_from(app: Celery, flow: Flow, index: int, ctx: Context) -> Any:
    """The chain of nodes from `index` up to the next wait or parallel group (whose join
    sends the rest), or to the end and `finish`. A wait right after a step is parked by
    that step's task once its effect landed (`then_wait`), as code that drafts what is
    to be approved records that it awaits approval: a task of its own would cost a
    message and a trip through the queue; a wait after anything else is a task. For the
    same reason the flow's last step, when it ends a chain, records the end itself once
    its effect landed (`then_finish`), as the last task of a team's chain is simply the
    last: `finish` is a task of its own only after a timer, a wait or a group."""
    signatures: list[Any] = []
    nodes = flow.nodes[index:]
    for number, node in enumerate(nodes):
        if isinstance(node, Parallel):
            if not signatures:
                return _chord(app, ctx, node, first=True)
            return _first_takes([*signatures, _chord(app, ctx, node, first=False)], ctx)
        if isinstance(node, Wait) and number and isinstance(nodes[number - 1], Step):
            break  # parked by the step before it, whose signature says so
        following = nodes[number + 1] if number + 1 < len(nodes) else None
        signatures.append(_node_signature(
            app, ctx, node, following if isinstance(node, Step)
            and isinstance(following, Wait) else None))
        if isinstance(node, Wait):
            break
    else:
        if nodes and isinstance(nodes[-1], Step):  # a step of its own, not a branch's
            signatures[-1] = _node_signature(app, ctx, nodes[-1], then_finish=True)
        else:
            signatures.append(_finish_signature(app, ctx, "completed", ""))
    return _first_takes(signatures, ctx)


def compensation_part(app: Celery, flow: Flow, ctx: Context, reason: str) -> Any:
    """Compensations of the steps passed, newest first, then the notice the ending owes
    (a wait's rejection or passed deadline, `Flow.notice_for`), then `finish` as
    compensated."""
    iid = _instance(ctx)
    signatures = [
        app.signature(COMPENSATE, kwargs={"node": step.name, "reason": reason},
                      task_id=task_id(iid, "compensate", step.name), **_limits(step))
        for step in flow.compensations_for(ctx["done"])
    ]
    if (notice := flow.notice_for(reason)) is not None:
        signatures.append(app.signature(NOTICE, kwargs={"node": notice.name, "reason": reason},
                                        task_id=task_id(iid, notice.name), **_limits(notice)))
    signatures.append(_finish_signature(app, ctx, "compensated", reason))
    return _first_takes(signatures, ctx)


def _node_index(flow: Flow, name: str) -> int:
    return [node.name for node in flow.nodes].index(name)


def carried_step(flow: Flow, wait: Wait) -> Step | None:
    """The step that the wait's signal task runs itself once it claimed the wait (as a
    team's approval handler does the work the approval allows): the node right after
    the wait, when it is a step. The signal is sent with that step's time limits."""
    index = _node_index(flow, wait.name) + 1
    node = flow.nodes[index] if index < len(flow.nodes) else None
    return node if isinstance(node, Step) else None


def carrying_key(instance_id: str, wait: str) -> str:
    """Not a Redis key: where `_Decisions.carriers` keeps the token of the signal message
    whose task claimed the wait to run its carried step, while that step has not
    succeeded yet."""
    return _key(instance_id, "carrying", wait)


def signal_token(message: dict[str, Any]) -> str | None:
    """The token a signal message carries (`ChainStrategy.signal`), as kombu stored the
    message; None when it carries none or its body cannot be read."""
    try:
        body: Any = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        # Task protocol 2: [args, kwargs, embed]; protocol 1: a dict with "kwargs".
        kwargs = decoded[1] if isinstance(decoded, list) else decoded.get("kwargs", {})
        token = kwargs.get("token")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    return token if isinstance(token, str) else None


# ---------------------------------------------------------------------------- tasks


def _stop_chain(task: Any) -> None:
    # Celery marks every later task of a failed chain as failed too, `finish` included;
    # that write could land after the compensation's own `finish`, so drop the rest.
    task.request.chain = None


class ChainTasks:
    """The bodies of the chain's tasks, over the flow and this process's clients."""

    def __init__(self, app: Celery, flow: Flow, resources: ProcessResources) -> None:
        self.app = app
        self.flow = flow
        self.resources = resources

    def _flow(self, ctx: Context) -> Flow:
        """The flow of the instance `ctx` belongs to: its `for_each` steps expanded for
        its input (see `Flow.for_instance`)."""
        return self.flow.for_instance(_request(ctx))

    def delivered(self, task: Any, ctx: Context, name: str) -> int:
        """Record this delivery of the task's message; the ledger's attempt number, which
        counts every delivery (a redelivery after a lost worker included), as Temporal
        counts an attempt that timed out.

        Celery's own retry count is the same on a redelivered message as on the delivery
        that died, so it alone would show a redelivery as the attempt before it. Each
        delivery that begins is appended in Redis, with the broker's `redelivered` flag
        (which is also set on a message that a dead worker had only prefetched, so it
        does not count as an attempt by itself).
        """
        retries = int(task.request.retries)
        key = deliveries_key(_instance(ctx), name, retries)
        flagged = bool((task.request.delivery_info or {}).get("redelivered"))
        client = self.resources.redis()
        # One round trip, without MULTI/EXEC (two commands a step fewer): both commands
        # leave in one write and Redis runs them in order; nothing reads the list
        # between them.
        with client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps({"at": time.time(), "redelivered": flagged}))
            pipe.expire(key, KEY_LIFETIME)
            deliveries = int(pipe.execute()[0])
        return retries + deliveries

    def step(self, task: Any, ctx: Context, node: str, then_wait: str | None = None,
             then_finish: bool = False) -> Context:
        """Run the step's effect; with `then_wait`, park the wait that follows it once
        the effect landed, and with `then_finish` record the end (see `part_from`)."""
        passed = self._step(task, ctx, node)
        with self.resources.interruptible():
            if then_wait is not None:
                self.wait(passed, then_wait)
            if then_finish:
                self.finish_after_last_step(passed)
        return passed

    def finish_after_last_step(self, ctx: Context) -> None:
        """What `finish` does, done by the last step's task once its effect landed: look
        for the interrupt last (it came while the step was in flight: compensate, the
        step included), else record the instance completed under `finish`'s task ID,
        where `status()` reads it. A worker killed before that record loses the end as
        it loses the `finish` message it would have sent: with the step, whose
        redelivery (late acknowledgement) records it."""
        interrupt = self.interrupted(_instance(ctx))
        if interrupt is not None:
            compensation_part(self.app, self._flow(ctx), ctx, interrupt.reason).apply_async()
            return
        # `finish`'s SUCCESS meta as Celery's backend stores it, in one command where
        # `mark_as_done` takes five (a read of the meta, then a transaction of the write
        # and a publish that nobody subscribes to): NX keeps what Celery's read keeps,
        # never a write over a success (the end recorded by an earlier delivery of this
        # step, or the compensated end): a chain whose last step records its end sends
        # no completing `finish` task, the only one that fails (halted by the interrupt).
        tid = task_id(_instance(ctx), "finish")
        backend = self.app.backend
        meta = {"status": "SUCCESS", "result": {"outcome": "completed", "done": ctx["done"],
                                                "reason": ""},
                "traceback": None, "children": [], "date_done": self.app.now().isoformat(),
                "task_id": tid}
        # Retried over a lost connection as Celery's own write is (`RedisBackend.ensure`):
        # a broker restarted at this moment would fail a step whose effect has landed.
        backend.ensure(functools.partial(
            self.resources.redis().set, backend.get_key_for_task(tid), backend.encode(meta),
            nx=True, ex=backend.expires or None), ())

    def _step(self, task: Any, ctx: Context, node: str) -> Context:
        self.halt_if_interrupted(task, ctx, node, step=True)
        flow = self._flow(ctx)
        step = cast(Step, flow.node(node))
        attempt = int(task.request.retries) + 1  # Celery's count: what its retries go by
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(flow, _request(ctx), step,
                                             attempt=self.delivered(task, ctx, node),
                                             engine=ENGINE)
        except (TransientEffectError, SoftTimeLimitExceeded) as error:
            if attempt < step.retry.max_attempts:
                raise task.retry(exc=error, countdown=step.retry.delay_after(attempt),
                                 max_retries=step.retry.max_attempts - 1) from error
            self._give_up(task, ctx, node,
                          f"step {node} failed after {attempt} attempts: "
                          f"{_describe(error, step)}")
            raise
        except PermanentEffectError as error:
            self._give_up(task, ctx, node, f"step {node} failed: {error}")
            raise
        return _passed(ctx, node)

    def began_before(self, task: Any, ctx: Context, node: str) -> bool:
        """Whether an earlier delivery of this very message began, on a worker that died
        since: the step was in flight, and its effect may have landed. It finishes, as a
        step in flight when the interrupt comes does (its repeat is absorbed or applies
        once); halting it here would leave an effect that landed out of the
        compensations. The next node halts."""
        key = deliveries_key(_instance(ctx), node, int(task.request.retries))
        return int(self.resources.redis().llen(key)) > 0

    def _give_up(self, task: Any, ctx: Context, node: str, reason: str) -> None:
        """Compensate what applied, unless the step is a branch's: there Celery fails the
        rest of the branch and, once every branch has ended, the chord's error callback
        compensates (`branch_failed`)."""
        if self._flow(ctx).branch_of(node) is not None:
            return
        _stop_chain(task)
        compensation_part(self.app, self._flow(ctx), ctx, reason).apply_async()

    def interrupted(self, instance_id: str) -> Interrupt | None:
        """The flow's interrupt, once it was recorded for the instance."""
        interrupt = self.flow.interrupt
        if interrupt is None or not self.resources.redis().exists(interrupt_key(instance_id)):
            return None
        return interrupt

    def halt_if_interrupted(self, task: Any, ctx: Context, node: str, *,
                            step: bool = False) -> None:
        """Before a step, a timer or the end: once the interrupt was recorded, drop the
        rest of the chain and send the compensations of what applied (for a branch's
        step, the chord's error callback sends them once every branch has ended). A
        `step` that began before, on a worker that died, runs on (`began_before`)."""
        interrupt = self.interrupted(_instance(ctx))
        if interrupt is None or (step and self.began_before(task, ctx, node)):
            return
        if self._flow(ctx).branch_of(node) is None:
            _stop_chain(task)
            compensation_part(self.app, self._flow(ctx), ctx, interrupt.reason).apply_async()
        # A branch's chain is left to Celery, which fails the rest of it and then calls
        # the chord's error callback: stopping it would leave the chord waiting forever.
        raise Interrupted(interrupt.reason)

    def timer(self, task: Any, ctx: Context, node: str) -> Context:
        self.halt_if_interrupted(task, ctx, node)
        return _passed(ctx, node)

    def finish(self, task: Any, ctx: Context, outcome: str, reason: str) -> dict[str, Any]:
        """The end of the chain. Completing, it looks for the interrupt last (the last
        step was in flight when it came: compensate instead). An interrupt recorded after
        that look loses to completion: every step had landed before it, nothing is
        compensated and no notice goes out; the instance ends completed, which the
        checker accepts as long as nothing started after the interrupt. A halted finish
        fails, and the compensation's own `finish` (same task ID) succeeds after it;
        were the two writes to cross, Celery's Redis result backend never writes over a
        success, so the instance cannot read as both."""
        if outcome == "completed":
            self.halt_if_interrupted(task, ctx, "finish")
        return {"outcome": outcome, "done": ctx["done"], "reason": reason}

    def interrupt(self, instance_id: str) -> dict[str, Any]:
        """The interrupt's signal task: record it (a sender through graduate already
        did) and end the wait the instance is parked at, if it is."""
        client = self.resources.redis()
        record_interrupt(client, self.flow, instance_id)
        ended = [wait.name for wait in self.flow.waits
                 if client.exists(context_key(instance_id, wait.name))
                 and self.resolve(instance_id, wait, "interrupt", None)]
        return {"interrupted": True, "ended": ended}

    def branch_start(self, ctx: Context, node: str) -> None:
        """Park the context that reached the group, for its error callback: a failed chord
        hands that callback no result of its header."""
        found = self._flow(ctx).branch_of(node)
        if found is not None and found[1].steps[0].name == node:
            self.resources.redis().set(context_key(_instance(ctx), found[0].name),
                                       json.dumps({"context": ctx}), ex=KEY_LIFETIME)

    def join(self, contexts: list[Context], node: str) -> Context:
        """Every branch ended well: merge their contexts and send the rest of the flow."""
        flow = self._flow(contexts[0])
        group = cast(Parallel, flow.node(node))
        inside = {s.name for s in group.steps}
        done = [n for n in contexts[0]["done"] if n not in inside]
        done += [n for ctx in contexts for n in ctx["done"] if n in inside]
        joined = {**contexts[0], "done": [*done, node]}
        following = _node_index(flow, node) + 1
        part_from(self.app, flow, following, joined).apply_async()
        return joined

    def branch_failed(self, join_id: str) -> dict[str, Any]:
        """The chord's error callback, called by Celery with the join's task ID once every
        branch has ended and one failed: compensate every step that applied, in any
        branch or before the group, once (the claim keeps a second call from sending
        them again)."""
        iid, _, name = join_id.rpartition(":")
        client = self.resources.redis()
        parked = _load(client, context_key(iid, name))
        if parked is None:
            return {"ignored": f"no context parked for {join_id}"}
        ctx: Context = parked["context"]
        flow = self._flow(ctx)
        group = cast(Parallel, flow.node(name))
        applied, failure = [], ""
        for branch in group.branches:
            for step in branch.steps:
                result = self.app.AsyncResult(task_id(iid, step.name))
                if result.state == "SUCCESS":
                    applied.append(step.name)
                elif result.state == "FAILURE" and not failure and not isinstance(
                        result.result, Interrupted):
                    failure = f"step {step.name} failed: {result.result}"
        interrupt = self.interrupted(iid)
        reason = failure or (interrupt.reason if interrupt else f"a branch of {name} failed")
        claim = {"by": "chord", "action": "compensate", "reason": reason, "at": time.time()}
        if not client.set(claim_key(iid, name), json.dumps(claim), nx=True, ex=KEY_LIFETIME):
            return {"resolved": False}
        compensation_part(self.app, flow, {**ctx, "done": [*ctx["done"], *applied]},
                          reason).apply_async()
        return {"resolved": True}

    def compensate(self, task: Any, ctx: Context, node: str, reason: str) -> Context:
        self._call_or_fail(task, ctx, cast(Step, self._flow(ctx).node(node)),
                           delivery=f"compensate:{node}", kind="compensation",
                           failed=f"{reason}; compensation of {node} failed")
        return ctx

    def notice(self, task: Any, ctx: Context, node: str, reason: str) -> Context:
        """Send the notice of how a wait ended, after its compensations; retried like a
        step. A notice that never lands ends the instance failed, saying so."""
        step = self._flow(ctx).node(node)
        assert isinstance(step, Step)
        self._call_or_fail(task, ctx, step, delivery=node, kind="effect",
                           failed=f"{reason}; {node} failed")
        return _passed(ctx, node)

    def _call_or_fail(self, task: Any, ctx: Context, step: Step, *, delivery: str,
                      kind: EffectKind, failed: str) -> None:
        """Call a compensation or a notice, retried like a step; one that never lands
        stops the chain and ends the instance failed with `failed` and the cause."""
        attempt = int(task.request.retries) + 1
        try:
            with self.resources.interruptible():
                self.resources.ledger().call(self._flow(ctx), _request(ctx), step,
                                             attempt=self.delivered(task, ctx, delivery),
                                             engine=ENGINE, kind=kind)
        except (TransientEffectError, SoftTimeLimitExceeded, PermanentEffectError) as error:
            if not isinstance(error, PermanentEffectError) and (
                attempt < step.retry.max_attempts
            ):
                raise task.retry(exc=error, countdown=step.retry.delay_after(attempt),
                                 max_retries=step.retry.max_attempts - 1) from error
            _stop_chain(task)
            reason = f"{failed}: {_describe(error, step)}"
            _finish_signature(self.app, ctx, "failed", reason).apply_async(args=(ctx,))
            raise

    def wait(self, ctx: Context, node: str) -> dict[str, str]:
        wait = cast(Wait, self.flow.node(node))
        iid = _instance(ctx)
        client = self.resources.redis()
        # Write first, then look for an early signal: the signal task does the reverse, so
        # at least one of the two sees the other, and the claim lets only one continue.
        parked = {"context": ctx, "deadline": time.time() + wait.deadline}
        # One round trip; Redis runs the two in order.
        with client.pipeline(transaction=False) as pipe:
            pipe.set(context_key(iid, node), json.dumps(parked), ex=_lifetime(wait))
            pipe.get(signal_key(iid, wait.signal))
            raw = pipe.execute()[1]
        early = None if raw is None else json.loads(raw)
        if self.interrupted(iid) is not None:
            self.resolve(iid, wait, "interrupt", None, parked=ctx)
        elif early is not None:
            self.resolve(iid, wait, "signal", early, parked=ctx)
        else:
            self.app.signature(DEADLINE, args=(iid, node), task_id=task_id(iid, node, "deadline"),
                               countdown=wait.deadline).apply_async()
            for send in wait.while_open:
                self.app.signature(REMINDER, args=(iid, node, send.kind),
                                   task_id=task_id(iid, node, send.kind),
                                   countdown=send.after, **_limits(send.step)).apply_async()
        return {"waiting": wait.signal}

    def reminder(self, task: Any, instance_id: str, node: str,
                 kind: WhileOpenKind = "reminder") -> dict[str, Any]:
        """The countdown of the wait's reminder (or, by `kind`, its escalation) came:
        send its effect once if the wait is still open (parked, not yet claimed by its
        signal or deadline), and leave the wait open. (`kind` defaults to the reminder,
        the only one a task sent before escalations names.)

        Redis gives back a countdown held past its visibility timeout even by a live
        worker, and each copy runs at the countdown: so a delivery first takes a lease
        on the send (`send_key`, SET NX for the step's timeout and the hard limit's
        slack, the longest the task can run: it is sent with the step's time limits),
        and marks it sent (or failed: one attempt) for the wait's lifetime once the call
        returned. A delivery that finds it sent skips for good; one that finds the lease
        held by another delivery is retried when the lease runs out, and sends then,
        with the same idempotency key, unless the holder marked it sent: a holder that
        died before that (a killed worker) leaves the send to the next delivery.
        Every skip is recorded (`send_skips_key`)."""
        wait = cast(Wait, self.flow.node(node))
        step = next(send.step for send in wait.while_open if send.kind == kind)
        client = self.resources.redis()
        parked = _load(client, context_key(instance_id, node))
        if parked is None or client.exists(claim_key(instance_id, node)):
            return {"skipped": f"{node} is no longer open"}
        key = send_key(instance_id, node, kind)
        lease = {"state": "sending", "at": time.time()}
        with client.pipeline(transaction=False) as pipe:
            pipe.set(key, json.dumps(lease), nx=True,
                     ex=max(1, math.ceil(step.timeout + HARD_LIMIT_SLACK)))
            pipe.get(key)
            pipe.pttl(key)
            won, raw, left = pipe.execute()
        if not won:
            standing = None if raw is None else json.loads(raw)
            state = "sending" if standing is None else str(standing["state"])
            if state != "sending":
                return self._skip(task, instance_id, node, kind,
                                  f"{step.name} already {state}", retry=None)
            # In hand elsewhere: look again when the lease runs out (PTTL; gone: now).
            return self._skip(task, instance_id, node, kind,
                              f"{step.name} in hand elsewhere", retry=max(0.0, left / 1000))
        ctx: Context = parked["context"]
        try:
            with self.resources.interruptible():
                outcome = self.resources.ledger().call(
                    self._flow(ctx), _request(ctx), step,
                    attempt=self.delivered(task, ctx, step.name), engine=ENGINE)
        except (TransientEffectError, PermanentEffectError, SoftTimeLimitExceeded) as error:
            # Seen in the ledger; its one attempt: the wait goes on without it. (A soft
            # time limit discarded `client` with the process's connections: a new one.)
            failed = {"state": "failed", "at": time.time()}
            self.resources.redis().set(key, json.dumps(failed), ex=_lifetime(wait))
            return {"failed": _describe(error, step)}
        client.set(key, json.dumps({"state": "sent", "at": time.time()}), ex=_lifetime(wait))
        return {"sent": outcome.value}

    def _skip(self, task: Any, instance_id: str, node: str, kind: str, why: str, *,
              retry: float | None) -> dict[str, Any]:
        """Record a delivery of a reminder or escalation task that did not send it; with
        `retry` (seconds), send the task again then (Celery's retry: a new message)."""
        wait = cast(Wait, self.flow.node(node))
        skip = {"at": time.time(), "why": why,
                "redelivered": bool((task.request.delivery_info or {}).get("redelivered"))}
        key = send_skips_key(instance_id, node, kind)
        with self.resources.redis().pipeline(transaction=False) as pipe:
            pipe.rpush(key, json.dumps(skip))
            pipe.ltrim(key, -SKIPS_KEPT, -1)  # a holder that keeps dying keeps it growing
            pipe.expire(key, _lifetime(wait))
            pipe.execute()
        if retry is not None:
            raise task.retry(countdown=retry)
        return {"skipped": why}

    def signal(self, task: Any, instance_id: str, name: str, payload: dict[str, Any],
               token: str | None = None) -> dict[str, Any]:
        """The signal task: store the signal, and if the wait is parked, claim it. With
        `token` (the sender's mark of this very message, kept by a retry and a
        redelivery), a claim that continues runs the step after the wait here
        (`run_carried`), and a claim already made under the same token is this
        message's own, cut short: it runs the step again."""
        if self.flow.interrupt is not None and name == self.flow.interrupt.signal:
            return self._stored(task, self.interrupt(instance_id))
        wait = next((w for w in self.flow.waits if w.signal == name), None)
        if wait is None:
            return self._stored(task, {"ignored": f"flow {self.flow.name} awaits no signal "
                                                  f"{name!r}"})
        # Write first, then look for the parked wait (the reverse of `wait`), in one round
        # trip: Redis runs the two in order. The parked context, written once by the
        # park, is read here for the claim that follows.
        with self.resources.redis().pipeline(transaction=False) as pipe:
            pipe.set(signal_key(instance_id, name), json.dumps(payload), ex=_lifetime(wait))
            pipe.get(context_key(instance_id, wait.name))
            parked = pipe.execute()[1]
        if parked is not None:
            claimed = self.resolve(instance_id, wait, "signal", payload, carrier=task,
                                   token=token, parked=json.loads(parked)["context"])
            if claimed is Claimed.RAN_STEP:  # the step stored its own result
                return {"resolved": True}
            return self._stored(task, {"resolved": bool(claimed)})
        return self._stored(task, {"stored": True})

    def _stored(self, task: Any, result: dict[str, Any]) -> dict[str, Any]:
        """Store the success of a signal task that ran no step (the task ignores its
        result, for the one that does): its received mark outlives it, and without a
        stored success `holds()` would count such a message as still in a worker's hands
        (`_in_live_hands_all`): a second message that found the claim not its own, or a
        signal stored before its wait parked, would hold its instance for good."""
        # No request: the backend would read the task's ignore_result from it and store
        # nothing.
        self.app.backend.mark_as_done(task.request.id, result)
        return result

    def deadline(self, instance_id: str, node: str) -> dict[str, Any]:
        wait = cast(Wait, self.flow.node(node))
        return {"resolved": bool(self.resolve(instance_id, wait, "deadline", None))}

    def resolve(self, iid: str, wait: Wait, by: str, payload: dict[str, Any] | None, *,
                carrier: Any = None, token: str | None = None,
                parked: Context | None = None) -> Claimed:
        """Claim the wait for the signal or the deadline; the winner sends what follows.
        A signal task (`carrier`, with its message's `token`) that continues runs the
        step after the wait itself (`run_carried`), and so does that same message
        redelivered or retried after it claimed. `parked`: the wait's parked context,
        where the caller has it already (the park writes it once), else read here."""
        decision = (payload or {}).get("decision")
        interrupt = self.interrupted(iid)
        if interrupt is not None:  # recorded first: the wait ends interrupted, whoever ends it
            action, reason = "compensate", interrupt.reason
        elif by == "signal":
            action = "continue" if decision == "approve" else wait.on_reject
            reason = "" if decision == "approve" else wait.reason("rejected")
        else:
            action, reason = wait.on_timeout, wait.reason("expired")
        claim = {"by": by, "decision": decision, "action": action, "reason": reason,
                 "at": time.time()}
        carries = (carrier is not None and token is not None and action == "continue"
                   and carried_step(self.flow, wait) is not None)
        if carries:
            claim["token"] = token  # this message runs the step after the wait
        # The claim, the parked context (unless given) and the claim that stands in one
        # round trip (the context is read whether or not the claim is won; only the
        # winner uses it).
        with self.resources.redis().pipeline(transaction=False) as pipe:
            pipe.set(claim_key(iid, wait.name), json.dumps(claim), nx=True, ex=_lifetime(wait))
            if parked is None:
                pipe.get(context_key(iid, wait.name))
            pipe.get(claim_key(iid, wait.name))
            won, *raw, standing = pipe.execute()
        if not won and not (token is not None and standing is not None
                            and json.loads(standing).get("token") == token):
            return Claimed.NOT
        ctx: Context = parked if parked is not None else json.loads(raw[0])["context"]
        flow = self._flow(ctx)
        if not won or carries:
            # Won now, or won by this very message before it was cut short (redelivered
            # after its worker died, or retried after the step failed): run the step.
            self.run_carried(carrier, flow, wait, _passed(ctx, wait.name))
            return Claimed.RAN_STEP
        if action == "continue":
            following = _node_index(flow, wait.name) + 1
            part_from(self.app, flow, following, _passed(ctx, wait.name)).apply_async()
        elif action == "compensate":
            compensation_part(self.app, flow, ctx, reason).apply_async()
        else:
            _finish_signature(self.app, ctx, "failed", reason).apply_async(args=(ctx,))
        return Claimed.SENT

    def run_carried(self, task: Any, flow: Flow, wait: Wait, ctx: Context) -> None:
        """Run the step after the wait in the signal task that claimed the wait, as its
        own task would (`step`: its retries are the signal task's, sent with the step's
        time limits), then send the rest, and store the step's result under the step's
        own task ID, where `status()`, `history()` and the harness read it, after the
        rest was sent (Celery's order for a chain's task). A failure the step handles
        (it compensated, or was interrupted) is stored there too, then fails the signal
        task; any other failure fails the signal task only, which `status()` reads for
        the step (`_status`)."""
        step = cast(Step, carried_step(flow, wait))
        index = _node_index(flow, step.name)
        following = flow.nodes[index + 1] if index + 1 < len(flow.nodes) else None
        then_wait = following.name if isinstance(following, Wait) else None
        tid = task_id(_instance(ctx), step.name)
        try:
            passed = self.step(task, ctx, step.name, then_wait, then_finish=following is None)
        except Retry:
            raise
        except HANDLED as error:
            self.app.backend.mark_as_failure(tid, error)
            raise
        if following is not None and then_wait is None:
            part_from(self.app, flow, index + 1, passed).apply_async()
        self.app.backend.mark_as_done(tid, passed)


def _lifetime(wait: Wait) -> int:
    return int(wait.deadline) + KEY_LIFETIME


def register(app: Celery, flow: Flow, resources: ProcessResources) -> None:
    """Register the chain's tasks on `app`."""
    tasks = ChainTasks(app, flow, resources)

    # Plain functions, not bound methods: Celery checks a task's arguments against the
    # function's signature, and takes the first parameter of a method for `self`. Not
    # shared: a shared task is added to every Celery app the process creates later, so a
    # second engine would run the first engine's closures.
    def step(task: Any, ctx: Context, node: str, then_wait: str | None = None,
             then_finish: bool = False) -> Context:
        with resources.interruptible():
            tasks.branch_start(ctx, node)
        return tasks.step(task, ctx, node, then_wait, then_finish)

    def join(contexts: list[Context], node: str) -> Context:
        with resources.interruptible():
            return tasks.join(contexts, node)

    # One parameter: Celery sends such an error callback as a task, with the failed
    # task's ID (here the join's, from which the instance and group are read).
    def branch_failed(join_id: str) -> dict[str, Any]:
        with resources.interruptible():
            return tasks.branch_failed(join_id)

    def compensate(task: Any, ctx: Context, node: str, reason: str) -> Context:
        return tasks.compensate(task, ctx, node, reason)

    def notice(task: Any, ctx: Context, node: str, reason: str) -> Context:
        return tasks.notice(task, ctx, node, reason)

    def wait(ctx: Context, node: str) -> dict[str, str]:
        with resources.interruptible():
            return tasks.wait(ctx, node)

    def signal(task: Any, instance_id: str, name: str, payload: dict[str, Any],
               token: str | None = None) -> dict[str, Any]:
        with resources.interruptible():
            return tasks.signal(task, instance_id, name, payload, token)

    def deadline(instance_id: str, node: str) -> dict[str, Any]:
        with resources.interruptible():
            return tasks.deadline(instance_id, node)

    def reminder(task: Any, instance_id: str, node: str,
                 kind: WhileOpenKind = "reminder") -> dict[str, Any]:
        return tasks.reminder(task, instance_id, node, kind)

    def timer(task: Any, ctx: Context, node: str) -> Context:
        with resources.interruptible():
            return tasks.timer(task, ctx, node)

    def finish(task: Any, ctx: Context, outcome: str, reason: str) -> dict[str, Any]:
        with resources.interruptible():
            return tasks.finish(task, ctx, outcome, reason)

    app.task(name=STEP, bind=True, shared=False)(step)
    app.task(name=COMPENSATE, bind=True, shared=False)(compensate)
    app.task(name=NOTICE, bind=True, shared=False)(notice)
    app.task(name=WAIT, shared=False)(wait)
    # A signal task that runs the step after its wait stores no success of its own (the
    # step stores its result, `run_carried`): a read, a transaction of a write and a
    # publish fewer a flow. One that runs no step stores it itself (`_stored`), which
    # `holds()` reads. Retries and failures are stored, as `_status` reads them for the
    # step it carries.
    app.task(name=SIGNAL, bind=True, shared=False, ignore_result=True,
             store_errors_even_if_ignored=True)(signal)
    app.task(name=DEADLINE, shared=False)(deadline)
    # Retried only while another delivery holds the send's lease (`ChainTasks.reminder`):
    # as often as deliveries die holding it.
    app.task(name=REMINDER, bind=True, shared=False, max_retries=None)(reminder)
    app.task(name=TIMER, bind=True, shared=False)(timer)
    app.task(name=FINISH, bind=True, shared=False)(finish)
    app.task(name=JOIN, shared=False)(join)
    app.task(name=BRANCH_FAILED, shared=False)(branch_failed)


# ---------------------------------------------------------------------------- engine side

_OUTCOMES = {"completed": InstanceState.COMPLETED, "compensated": InstanceState.COMPENSATED,
             "failed": InstanceState.FAILED}


# Failures the task code handles itself, by retrying or by sending the compensations.
# Any other failure (the hard time limit, a lost pool child, a bug) ends the chain there.
HANDLED = (TransientEffectError, PermanentEffectError, SoftTimeLimitExceeded, Interrupted)


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _stopped(done: list[str], failure: str, date_done: datetime | None) -> InstanceStatus:
    return InstanceStatus(
        InstanceState.FAILED, tuple(done), finished_at=_timestamp(date_done),
        detail=f"{failure}; the chain stopped there and nothing compensates",
    )


@dataclass(frozen=True)
class _Record:
    """What the result backend holds of one instance, read in one round trip: each
    task's meta as Celery stores it, each wait's claim and parked context, and an
    operator's cancellation."""

    metas: dict[str, dict[str, Any]]
    claims: dict[str, Any]  # wait or parallel block -> its claim, or None while undecided
    parked: dict[str, bool]  # wait name -> whether a chain parked its context there
    cancel: Any
    # Whether a worker received one of the tasks the instance starts with: Celery
    # records no state of a task until it ends (started tasks are not tracked), and
    # this tells a first task in hand from one never taken.
    received: bool = False

    @classmethod
    def read(cls, app: Celery, client: redis.Redis, flow: Flow, instance_id: str,
             ids: list[str]) -> _Record:
        return cls.parse(app, flow, ids, client.mget(cls.keys(app, flow, instance_id, ids)))

    @staticmethod
    def keys(app: Celery, flow: Flow, instance_id: str, ids: list[str]) -> list[Any]:
        """The keys of one instance's record, in the order `parse` reads them."""
        # A parallel block is claimed too, by the first branch that fails.
        claimed = [n.name for n in flow.nodes if isinstance(n, Wait | Parallel)]
        keys = [app.backend.get_key_for_task(tid) for tid in ids]
        keys += [claim_key(instance_id, name) for name in claimed]
        keys += [context_key(instance_id, w.name) for w in flow.waits]
        keys += [received_key(tid) for tid in _first_task_ids(flow, instance_id)]
        keys.append(cancel_key(instance_id))
        return keys

    @classmethod
    def parse(cls, app: Celery, flow: Flow, ids: list[str], raws: list[Any]) -> _Record:
        """The record from the values of `keys`."""
        waits = [w.name for w in flow.waits]
        claimed = [n.name for n in flow.nodes if isinstance(n, Wait | Parallel)]
        metas = {tid: app.backend.decode_result(raw)
                 for tid, raw in zip(ids, raws[:len(ids)], strict=True) if raw is not None}
        claims = raws[len(ids):len(ids) + len(claimed)]
        contexts = raws[len(ids) + len(claimed):len(ids) + len(claimed) + len(waits)]
        received = raws[len(ids) + len(claimed) + len(waits):-1]
        return cls(metas=metas,
                   claims={name: None if raw is None else json.loads(raw)
                           for name, raw in zip(claimed, claims, strict=True)},
                   parked={w: raw is not None for w, raw in zip(waits, contexts, strict=True)},
                   cancel=None if raws[-1] is None else json.loads(raws[-1]),
                   received=any(raw is not None for raw in received))

    def state(self, tid: str) -> str:
        """Celery's state of the task; PENDING when the backend has no record of it."""
        return str(self.metas.get(tid, {}).get("status", "PENDING"))

    def result(self, tid: str) -> Any:
        return self.metas.get(tid, {}).get("result")

    def date_done(self, tid: str) -> datetime | None:
        value = self.metas.get(tid, {}).get("date_done")
        return datetime.fromisoformat(value) if isinstance(value, str) else value


def _first_task_ids(flow: Flow, instance_id: str) -> list[str]:
    """The tasks an instance starts with: its first node's, or each branch's first step
    when it starts with a parallel group."""
    first = flow.nodes[0]
    if isinstance(first, Parallel):
        return [task_id(instance_id, branch.steps[0].name) for branch in first.branches]
    return [task_id(instance_id, first.name)]


@dataclass(frozen=True)
class _Look:
    """What `ChainStrategy.statuses` keeps of an instance between looks: which values of
    its record (by their place in `_Record.keys`) can still change, a digest of those
    values, and the status its whole record gave."""

    open: tuple[int, ...]
    digest: bytes
    status: InstanceStatus


@dataclass(frozen=True)
class _Decisions:
    """What `ChainStrategy._can_move_in` asks of instances' waits, read once a look:
    which claims and parked contexts exist (by key), and, by `carrying_key`, the token
    of the signal message whose task claimed a wait to run the step after it, while
    that step has not succeeded."""

    exists: dict[str, bool]
    carriers: dict[str, str]


# Instances whose records `ChainStrategy.statuses` reads in one round trip.
STATUS_CHUNK = 500


# Every list of KEYS, whole, in one command (`ChainStrategy._deliveries_of`).
_READ_LISTS = """
local lists = {}
for i, key in ipairs(KEYS) do lists[i] = redis.call('LRANGE', key, 0, -1) end
return lists
"""


def _digest(raws: Sequence[bytes | str | None]) -> bytes:
    """A digest of one instance's record values, each told apart from the next and from
    an absent key: what `ChainStrategy.statuses` compares between looks."""
    digest = hashlib.blake2b(digest_size=16)
    for raw in raws:
        value = b"" if raw is None else raw.encode() if isinstance(raw, str) else raw
        digest.update(b"-" if raw is None else b"+" + len(value).to_bytes(8, "big") + value)
    return digest.digest()


class ChainStrategy:
    """Starts, signals and reads instances of the chain strategy from the client side."""

    def __init__(self, app: Celery, flow: Flow, resources: ProcessResources,
                 broker: BrokerView) -> None:
        self.app = app
        self.flow = flow
        self.resources = resources
        self.broker = broker
        self._silent: dict[str, float] = {}  # worker name -> when it last failed to answer
        self._record_keys: dict[str, tuple[list[str], list[Any]]] = {}  # see statuses()
        self._looked: dict[str, _Look] = {}
        self._inputs: dict[str, InstanceInput] = {}  # instance -> its input, see _flow

    def _flow(self, instance_id: str) -> Flow:
        """The instance's flow (its `for_each` steps expanded, `Flow.for_instance`),
        from the input it was started with, else the one the ledger registered."""
        if not self.flow.inputs:
            return self.flow
        if instance_id not in self._inputs:
            record = self.resources.ledger().find_instance(instance_id)
            self._inputs[instance_id] = () if record is None else record.input
        return self.flow.for_instance(self._inputs[instance_id])

    def start(self, request: InstanceRequest) -> None:
        self._inputs[request.instance_id] = request.input
        part_from(self.app, self._flow(request.instance_id), 0,
                  new_context(request)).apply_async()

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        """Nothing in a chain records which instances are running: the chain is sent
        again, and runs beside the first one."""
        self.start(request)
        return None

    def cancel(self, instance_id: str) -> None:
        """Revoke every task of the instance, as an operator would: tasks not yet run are
        dropped by the workers that know of the revocation, the task in hand runs to its
        end. A chain's compensations are sent by its own tasks when a step fails; nothing
        sends them for a cancellation, so what applied stays applied (the ledger shows
        it), and the instance is reported failed."""
        self.app.control.revoke(self._task_ids(instance_id))
        self.resources.redis().set(cancel_key(instance_id), json.dumps({"at": time.time()}),
                                   ex=KEY_LIFETIME)

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        if self.app.AsyncResult(task_id(instance_id, "finish")).state == "SUCCESS":
            raise EngineError(f"instance {instance_id!r} has finished; it takes no more "
                              "signals")
        if self.flow.interrupt is not None and name == self.flow.interrupt.signal:
            # Recorded here, before the signal task: a worker lost with that task (acked
            # early) must not lose the interrupt; the next step, timer or deadline sees it.
            record_interrupt(self.resources.redis(), self.flow, instance_id)
        flow = self._flow(instance_id)
        wait = next((w for w in flow.waits if w.signal == name), None)
        carried = None if wait is None else carried_step(flow, wait)
        # A signal that may run the step after its wait (`ChainTasks.run_carried`) has
        # that step's time limits, and a token by which its claim knows this message.
        options: dict[str, Any] = {} if carried is None else _limits(carried)
        kwargs = {} if carried is None else {"token": uuid.uuid4().hex}
        self.app.signature(SIGNAL, args=(instance_id, name, payload), kwargs=kwargs,
                           task_id=task_id(instance_id, "signal", name), **options,
                           ).apply_async()

    def status(self, instance_id: str) -> InstanceStatus:
        # One MGET for the whole record.
        return self._status(instance_id, _Record.read(
            self.app, self.resources.redis(), self._flow(instance_id), instance_id,
            self._task_ids(instance_id)))

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Every instance's `status`, in at most two round trips: the harness asks this
        of every instance it watches, on the same cores as the workers.

        The first reads, for each instance seen before, only the values of its record
        that can still change (`_Look.open`): a task's meta until it is SUCCESS (Celery
        never writes over a success), a claim, parked context, received mark or
        cancellation until it exists (each is written once; only its presence or its
        first value counts). The second reads the whole record of each instance whose
        open values moved (or that is new), one MGET each, and decodes it. Most of a
        record's bytes are the metas of the tasks it passed, each carrying the context:
        read once, not at every look.
        """
        known, looked = self._record_keys, self._looked
        # Kept for the instances watched now only: each one's task IDs and keys, and
        # what its last full read gave (`_Look`); never the values themselves, which
        # would hold kilobytes an instance in the harness.
        self._record_keys = {iid: known.get(iid) or self._keys_of(iid) for iid in instance_ids}
        self._looked = {}
        # STATUS_CHUNK instances a round trip: all the values of thousands at once would
        # be tens of megabytes in the harness at a time.
        for first in range(0, len(instance_ids), STATUS_CHUNK):
            chunk = instance_ids[first:first + STATUS_CHUNK]
            moved = [iid for iid in chunk if iid not in looked]
            seen = [iid for iid in chunk if iid in looked and looked[iid].open]
            self._looked.update({iid: looked[iid] for iid in chunk
                                 if iid in looked and not looked[iid].open})
            if seen:
                pipeline = self.resources.redis().pipeline(transaction=False)
                for iid in seen:
                    keys = self._record_keys[iid][1]
                    pipeline.mget([keys[i] for i in looked[iid].open])
                for iid, raws in zip(seen, pipeline.execute(), strict=True):
                    if _digest(raws) == looked[iid].digest:
                        self._looked[iid] = looked[iid]
                    else:
                        moved.append(iid)
            if moved:
                pipeline = self.resources.redis().pipeline(transaction=False)
                for iid in moved:
                    pipeline.mget(self._record_keys[iid][1])
                for iid, raws in zip(moved, pipeline.execute(), strict=True):
                    self._looked[iid] = self._look(iid, raws)
        return {iid: self._looked[iid].status for iid in instance_ids}

    def statuses_alone(self, instance_ids: Sequence[str],
                       ) -> dict[str, InstanceStatus | Exception]:
        """`status` of each instance, its whole record read afresh (never from what
        `statuses` kept), an MGET each, STATUS_CHUNK instances a round trip. For each:
        its status, or what `status` raises."""
        found: dict[str, InstanceStatus | Exception] = {}
        for first in range(0, len(instance_ids), STATUS_CHUNK):
            chunk = instance_ids[first:first + STATUS_CHUNK]
            try:
                keys = {iid: self._keys_of(iid) for iid in chunk}
                raws = self._read({iid: listed for iid, (_, listed) in keys.items()})
                for iid in chunk:
                    ids = keys[iid][0]
                    found[iid] = self._status(iid, _Record.parse(
                        self.app, self._flow(iid), ids, raws[iid]))
            except Exception as error:
                found.update({iid: error for iid in chunk if iid not in found})
        return found

    def _look(self, instance_id: str, raws: list[Any]) -> _Look:
        """The status of the instance from its whole record's values, and which of
        them can still change."""
        ids = self._record_keys[instance_id][0]
        record = _Record.parse(self.app, self._flow(instance_id), ids, raws)
        open_ = tuple(i for i, raw in enumerate(raws) if raw is None or (
            i < len(ids) and record.state(ids[i]) != "SUCCESS"))
        return _Look(open_, _digest([raws[i] for i in open_]),
                     self._status(instance_id, record))

    def _keys_of(self, instance_id: str) -> tuple[list[str], list[Any]]:
        ids = self._task_ids(instance_id)
        return ids, _Record.keys(self.app, self._flow(instance_id), instance_id, ids)

    def _status(self, instance_id: str, record: _Record) -> InstanceStatus:
        finish = task_id(instance_id, "finish")
        if record.state(finish) == "SUCCESS":
            result = record.result(finish)
            return InstanceStatus(state=_OUTCOMES[result["outcome"]], done=tuple(result["done"]),
                                  finished_at=_timestamp(record.date_done(finish)),
                                  detail=result["reason"])
        cancelled = record.cancel
        if cancelled is not None:
            return InstanceStatus(
                InstanceState.FAILED, finished_at=float(cancelled["at"]),
                detail="revoked by an operator; a chain has no compensation path for a "
                       "cancellation, so what applied stays applied")
        done: list[str] = []
        known = record.received or record.state(finish) != "PENDING"
        carrier = None  # the signal task that claimed the last wait to run the next step
        for node in self._flow(instance_id).nodes:
            tid = task_id(instance_id, node.name)
            state = record.state(tid)
            if carrier is not None and state == "PENDING" and (
                    record.state(carrier) in ("RETRY", "FAILURE")):
                # The step runs in that task (`run_carried`), which stores the step's
                # result under the step's ID: until then its retry, or a failure the
                # step could not store (a lost pool child, the hard time limit), is the
                # signal task's.
                tid, state = carrier, record.state(carrier)
            carrier = None
            known = known or state != "PENDING"
            if isinstance(node, Parallel):
                states = {s.name: record.state(task_id(instance_id, s.name))
                          for s in node.steps}
                known = known or any(branch != "PENDING" for branch in states.values())
                done += [name for name, branch in states.items() if branch == "SUCCESS"]
                claim = record.claims[node.name]
                if claim is not None:
                    return self._compensating(record, instance_id, done, claim["reason"])
                if state == "SUCCESS":
                    done.append(node.name)
                    continue
                failed = [name for name, branch in states.items() if branch == "FAILURE"]
                if failed and known:
                    return InstanceStatus(
                        InstanceState.RUNNING, tuple(done),
                        detail=f"at {node.name}: {', '.join(failed)} failed; the chord "
                               "compensates once every branch has ended")
                return self._running(known, done, node, state)
            if isinstance(node, Wait):
                claim = record.claims[node.name]
                if claim is not None and claim["action"] == "continue":
                    done.append(node.name)
                    if "token" in claim:
                        carrier = task_id(instance_id, "signal", node.signal)
                    continue
                if claim is not None and claim["action"] == "compensate":
                    return self._compensating(record, instance_id, done, claim["reason"])
                if claim is not None:
                    return InstanceStatus(InstanceState.RUNNING, tuple(done),
                                          detail=f"failing: {claim['reason']}")
                if state == "SUCCESS" or record.parked[node.name]:
                    return InstanceStatus(InstanceState.WAITING, tuple(done), detail=node.signal)
                return self._running(known, done, node, state)
            if state == "SUCCESS":
                done.append(node.name)
                continue
            if state == "FAILURE":
                failure = (str(record.result(tid)) if isinstance(record.result(tid), Interrupted)
                           else f"step {node.name} failed: {record.result(tid)}")
                if not isinstance(record.result(tid), HANDLED):
                    return _stopped(done, failure, record.date_done(tid))
                return self._compensating(record, instance_id, done, failure)
            return self._running(known, done, node, state)
        return self._running(known, done, None, record.state(finish))

    def _compensating(self, record: _Record, instance_id: str, done: list[str],
                      reason: str) -> InstanceStatus:
        for step in self._flow(instance_id).compensations_for(done):
            tid = task_id(instance_id, "compensate", step.name)
            if record.state(tid) == "FAILURE" and not isinstance(record.result(tid), HANDLED):
                return _stopped(done, f"compensation of {step.name} failed: "
                                f"{record.result(tid)}", record.date_done(tid))
        if (notice := self.flow.notice_for(reason)) is not None:
            tid = task_id(instance_id, notice.name)
            if record.state(tid) == "FAILURE" and not isinstance(record.result(tid), HANDLED):
                return _stopped(done, f"{notice.name} failed: {record.result(tid)}",
                                record.date_done(tid))
        return InstanceStatus(InstanceState.RUNNING, tuple(done), detail=f"compensating: {reason}")

    def _running(self, known: bool, done: list[str], node: Node | None,
                 state: str) -> InstanceStatus:
        if not known:
            return InstanceStatus(
                InstanceState.UNKNOWN, tuple(done),
                detail="Celery's result backend holds no state for any task of this instance "
                       "(queued, lost, or never sent: Celery cannot tell which)",
            )
        where = node.name if node is not None else "finish"
        return InstanceStatus(InstanceState.RUNNING, tuple(done), detail=f"at {where}: {state}")

    def holds(self, instance_id: str) -> bool:
        """Whether a message in the broker, or a task in a live worker's hands, can still
        move the unfinished instance on; raises CannotTell when the broker shows too
        little to say.

        Only the broker's messages carry a chain on: a task acknowledged early (Celery's
        default) whose worker died is in no queue any more, and with it every later step.
        A message counts if running it can change the instance: a wait's deadline only
        while the wait is undecided, a signal only while its wait is parked undecided or
        was claimed by the signal's task to run the step after it, until that step
        succeeded (redelivered or retried, the message runs the step again).
        A STARTED state in the result backend proves nothing (a killed worker leaves it
        behind for good); a task counts as in hand only while a worker that answers says
        it has it.

        Redis: the queue's lists and the unacked hash are read directly. RabbitMQ shows
        a queue's messages only to its consumers, so its counts (ready messages,
        consumers) are read with a passive declare, and every consumer is asked for the
        tasks it has reserved, scheduled or running: nothing ready, every consumer
        answering, and none holding a task of the instance means nothing holds it. A
        ready message or a silent consumer could be the instance's: cannot tell.

        A moving task can be missed by a look, so a look is repeated while the instance's
        record in the result backend changed during it (up to HOLD_LOOKS times). On
        RabbitMQ the places are read in the order a message moves through them, and a
        worker answers an inspect only after the deliveries it received before it. On
        Redis a task a worker received is marked before it is acknowledged (see
        `mark_received`); only kombu's own move from queue to unacked hash has no mark,
        so a "no" needs a second look after REDIS_HANDOVER.
        """
        answer = self.holds_all([instance_id])[instance_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def holds_all(self, instance_ids: Sequence[str]) -> dict[str, bool | Exception]:
        """`holds` of each instance, each answer the one `holds` gives it alone (the same
        looks, in the same order, on the same records), the instances looked at
        together: each look reads their records and statuses in pipelined round trips,
        the broker's queues and unacked hash once (RabbitMQ: its counts, and every
        consumer's tasks, once), and pings the workers any of them names once; a "no" is
        looked at again after one REDIS_HANDOVER for all. Judging 5,000 instances one
        at a time took 323 s (issue 16). For each: the answer, or what `holds` raises."""
        answers: dict[str, bool | Exception] = {}
        pending = list(dict.fromkeys(instance_ids))
        found_nothing = dict.fromkeys(pending, 0)
        unseen = dict.fromkeys(pending, "")
        for _ in range(HOLD_LOOKS):
            if not pending:
                break
            again: list[str] = []
            for first in range(0, len(pending), STATUS_CHUNK):
                chunk = pending[first:first + STATUS_CHUNK]
                try:
                    again += self._look_for_holders(chunk, answers, found_nothing, unseen)
                except Exception as error:  # a read of them all failed: each raises it
                    answers.update({iid: error for iid in chunk if iid not in answers})
            pending = again
            # A "no" on Redis is looked at again after the handover (see REDIS_HANDOVER);
            # one that moved during its look is looked at again at once, as `holds` does.
            if any(found_nothing[iid] for iid in pending):
                time.sleep(REDIS_HANDOVER)
        answers.update(dict.fromkeys(pending, True))  # it kept moving at every look
        return {iid: answers[iid] for iid in instance_ids}

    def _look_for_holders(self, instance_ids: list[str], answers: dict[str, bool | Exception],
                          found_nothing: dict[str, int], unseen: dict[str, str]) -> list[str]:
        """One look of `holds_all` at `instance_ids`: the answers it settles go to
        `answers`; the instances to look at again are returned."""
        queue = self.app.conf.task_default_queue
        before = self._records(instance_ids)
        looking = []
        for iid, status in self.statuses_alone(instance_ids).items():
            if isinstance(status, Exception):
                raise status
            if status.state.finished:
                answers[iid] = False
            else:
                looking.append(iid)
        if self.broker.peekable:
            held = self._queued(queue, looking)
            decided = self._decisions(looking)
            tokens = self._signal_tokens(queue, decided, held)
            moving = {iid for iid in looking
                      if any(self._can_move_in(decided, iid, tid, tokens.get(tid))
                             for tid in held[iid])}
            answers.update(dict.fromkeys(moving, True))
            live = self._in_live_hands_all([iid for iid in looking if iid not in moving],
                                           decided)
            for iid, live_hands in live.items():
                if live_hands is not False:
                    answers[iid] = live_hands  # True, or CannotTell
            left = [iid for iid in live if live[iid] is False]
        else:
            # In the order a message moves (queue, a worker's ETA timer, its requests), so
            # that a message moving while it is read is seen at one place or next.
            counts = self.broker.queue_counts(queue)
            in_hands, answered = self._consumers_holding_all(looking, counts.consumers)
            decided = self._decisions(looking)
            left = []
            for iid in looking:
                if any(self._can_move_in(decided, iid, tid) for tid in in_hands[iid]):
                    answers[iid] = True
                    continue
                unseen[iid] = self._unseen(queue, counts.ready, counts.consumers, answered[iid])
                left.append(iid)
        after = self._records(left)
        again = []
        for iid in left:
            if after[iid] != before[iid]:
                again.append(iid)  # something moved while it was read: look again
                continue
            found_nothing[iid] += 1
            if not self.broker.peekable or found_nothing[iid] == 2:
                answers[iid] = (CannotTell(f"cannot tell whether anything still holds {iid}: "
                                           f"{unseen[iid]}") if unseen[iid] else False)
            else:
                again.append(iid)
        return again

    def held_until(self, instance_id: str) -> HeldUp | None:
        """When the unfinished instance is held only by messages that a dead worker took
        and never acknowledged (prefetched, or in hand when it was killed): Redis gives
        them back to the queue no sooner than the visibility timeout after they were
        taken (kombu's restore sweep), so nothing can move the instance before then. The
        earliest such moment (epoch seconds) and what holds it; None when anything else
        may move it sooner (a queued message, a live worker's task, a message whose
        taker cannot be proven dead) or when the broker cannot be read (RabbitMQ gives a
        dead consumer's messages back at once)."""
        if not self.broker.peekable or self.status(instance_id).state.finished:
            return None
        queue = self.app.conf.task_default_queue
        decided = self._decisions([instance_id])
        found = {instance_id: self.broker.task_ids(queue, f"{instance_id}:") or set()}
        tokens = self._signal_tokens(queue, decided, found)
        movable = {tid for tid in found[instance_id]
                   if self._can_move_in(decided, instance_id, tid, tokens.get(tid))}
        taken = self.broker.taken_at(f"{instance_id}:") or {}
        if not movable or movable - taken.keys():
            return None  # nothing movable (lost), or a queued message moves it any time
        client = self.resources.redis()
        takers: dict[str, str] = {}
        for tid in movable:
            worker = taker_of(client, tid, taken[tid])
            if worker is None:
                return None  # not yet marked by its taker (a live worker maybe)
            takers[tid] = worker
        if not all(proven_dead(name) for name in takers.values()):
            # Its taker runs (it will run the task or give the message back), or runs on
            # another host, whose processes cannot be seen: a silence there is no proof.
            return None
        if self._in_live_hands(instance_id):
            return None
        first = min(movable, key=lambda tid: taken[tid])
        until = taken[first] + self.broker.visibility_timeout
        return HeldUp(until, "held only by " + unacknowledged(
            f"{len(movable)} message(s)", f"{takers[first]}, now dead,",
            self.broker.visibility_timeout))

    @staticmethod
    def _unseen(queue: str, ready: int, consumers: int, answered: int) -> str:
        """What RabbitMQ holds that could be the instance's but cannot be looked at."""
        if ready:
            return (f"the broker's queue {queue} holds {ready} ready message(s), and "
                    "RabbitMQ shows a queue's messages only to whoever consumes them")
        if answered < consumers:
            return (f"{consumers - answered} of the {consumers} consumer(s) of queue "
                    f"{queue} did not answer Celery's inspect, and may hold the instance's "
                    "unacknowledged messages")
        return ""

    def _records(self, instance_ids: Sequence[str]) -> dict[str, tuple[object, ...]]:
        """What the result backend says of each task and wait of each instance: if it
        changes while holds() looks, something moved during the look."""
        claims = {iid: [claim_key(iid, w.name) for w in self.flow.waits]
                  for iid in instance_ids}
        metas = self._metas(instance_ids)
        present = self._read({iid: keys for iid, keys in claims.items()})
        return {iid: (tuple(str(meta.get("status", "PENDING")) for meta in metas[iid].values()),
                      tuple(int(raw is not None) for raw in present[iid]))
                for iid in instance_ids}

    def _metas(self, instance_ids: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Each task's meta as the result backend holds it, per instance and task ID in
        `_task_ids` order (PENDING, as Celery reports a task it holds nothing of)."""
        ids = {iid: self._task_ids(iid) for iid in instance_ids}
        raws = self._read({iid: [self.app.backend.get_key_for_task(tid) for tid in tids]
                           for iid, tids in ids.items()})
        return {iid: {tid: self.app.backend.decode_result(raw) if raw is not None
                      else {"status": "PENDING", "result": None}
                      for tid, raw in zip(tids, raws[iid], strict=True)}
                for iid, tids in ids.items()}

    def _read(self, keys: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The values of each instance's `keys` (None where absent), an MGET an instance,
        STATUS_CHUNK instances a round trip."""
        values: dict[str, list[Any]] = {}
        wanted = [iid for iid, listed in keys.items() if listed]
        for first in range(0, len(wanted), STATUS_CHUNK):
            chunk = wanted[first:first + STATUS_CHUNK]
            pipeline = self.resources.redis().pipeline(transaction=False)
            for iid in chunk:
                pipeline.mget(keys[iid])
            values.update(zip(chunk, pipeline.execute(), strict=True))
        return {iid: values.get(iid, []) for iid in keys}

    def _queued(self, queue: str, instance_ids: Sequence[str]) -> dict[str, set[str]]:
        """The IDs of each instance's tasks queued on `queue` or taken but not yet
        acknowledged: the broker read once for all of them (Redis only)."""
        found = self.broker.task_ids_by_instance(queue, instance_ids)
        if found is None:  # never on Redis, which `holds_all` reads this way only
            raise CannotTell("the broker cannot be read without consuming its messages")
        return found

    def _decisions(self, instance_ids: Sequence[str]) -> _Decisions:
        """Which of the instances' wait claims and parked contexts exist (by key), and
        which waits' signal tasks claimed them to run the step after (`carrying_key`)
        whose result is not SUCCESS yet, with the token of the message that claimed:
        what `_can_move_in` asks, read once a look."""
        flows = {iid: self._flow(iid) for iid in instance_ids}
        carried = {iid: [(w, carried_step(flow, w)) for w in flow.waits]
                   for iid, flow in flows.items()}
        keys = {iid: [key for w in flows[iid].waits
                      for key in (claim_key(iid, w.name), context_key(iid, w.name))]
                for iid in instance_ids}
        # The carried steps' metas after the keys, in the same round trip.
        values = self._read({iid: [*keys[iid], *(
            self.app.backend.get_key_for_task(task_id(iid, step.name))
            for _, step in carried[iid] if step is not None)] for iid in instance_ids})
        decided = _Decisions({}, {})
        for iid in instance_ids:
            found = dict(zip(keys[iid], values[iid][:len(keys[iid])], strict=True))
            decided.exists.update({key: raw is not None for key, raw in found.items()})
            step_metas = iter(values[iid][len(keys[iid]):])
            for wait, step in carried[iid]:
                meta = None if step is None else next(step_metas)
                raw = found[claim_key(iid, wait.name)]
                token = None if step is None or raw is None else json.loads(raw).get("token")
                if token is not None and (meta is None or self.app.backend.decode_result(
                        meta).get("status") != "SUCCESS"):
                    decided.carriers[carrying_key(iid, wait.name)] = str(token)
        return decided

    def _signal_tokens(self, queue: str, decided: _Decisions,
                       held: dict[str, set[str]]) -> dict[str, set[str | None]]:
        """The tokens of the signal messages in `held` (task IDs per instance, as the
        broker showed them) whose wait a signal task claimed to run its step
        (`_Decisions.carriers`): only such a message's token tells whether it is the
        claiming message again (redelivered, or retried) or another one. The broker is
        read for them only, and only when there are some; a message gone since `held`
        was read leaves its ID without tokens (`_can_move_in` counts it)."""
        wanted = {task_id(iid, "signal", wait.signal)
                  for iid in held for wait in self.flow.waits
                  if carrying_key(iid, wait.name) in decided.carriers
                  and task_id(iid, "signal", wait.signal) in held[iid]}
        if not wanted:
            return {}
        tokens: dict[str, set[str | None]] = {tid: set() for tid in wanted}
        for message in self.broker.messages([queue], containing=":signal:") or []:
            if (tid := message_task_id(message)) in tokens:
                tokens[tid].add(signal_token(message))
        return tokens

    def _consumers_holding_all(self, instance_ids: Sequence[str], consumers: int,
                               ) -> tuple[dict[str, set[str]], dict[str, int]]:
        """Each instance's task IDs that the workers hold (reserved, scheduled for an ETA,
        or running), and how many workers answered: one inspect for all of them."""
        if not instance_ids:
            return {}, {}
        ids = {iid: self._task_ids(iid) for iid in instance_ids}
        held, answered = consumers_holding(
            self.app, [tid for tids in ids.values() for tid in tids], consumers)
        return ({iid: held & set(tids) for iid, tids in ids.items()},
                dict.fromkeys(instance_ids, answered))

    def _can_move_in(self, decided: _Decisions, instance_id: str, tid: str,
                     tokens: Collection[str | None] | None = None) -> bool:
        """Whether running task `tid` can change the instance, by which of its wait claims
        and parked contexts exist (`_decisions`). `tokens`: those of the signal messages
        with that ID in the broker (`_signal_tokens`), where they were read; a task in
        a worker's hands is known by its ID only."""
        interrupt = self.flow.interrupt
        if interrupt is not None and tid == task_id(instance_id, "signal", interrupt.signal):
            # The interrupt's signal task ends only a wait parked undecided: elsewhere the
            # chain's own next task acts on the interrupt (its sender recorded it), and
            # counts by itself; with that task lost, the signal moves nothing.
            return any(decided.exists[context_key(instance_id, wait.name)]
                       and not decided.exists[claim_key(instance_id, wait.name)]
                       for wait in self.flow.waits)
        for wait in self.flow.waits:
            undecided = not decided.exists[claim_key(instance_id, wait.name)]
            if tid == task_id(instance_id, wait.name, "deadline"):
                return undecided
            if tid == task_id(instance_id, "signal", wait.signal):
                # Before the wait is parked a signal is only stored; the chain that
                # reaches the wait is what moves the instance, and counts by itself.
                # Once its message claimed the wait to run the step after it, that
                # message (redelivered, or retried: the same token) moves the instance
                # until the step succeeded; another signal message (another token)
                # finds the claim not its own and moves nothing. Where the tokens are
                # not known (a message in hand, one gone from the broker since, or one
                # whose body cannot be read), it counts.
                carrier = decided.carriers.get(carrying_key(instance_id, wait.name))
                return ((undecided and decided.exists[context_key(instance_id, wait.name)])
                        or (carrier is not None and (
                            not tokens or carrier in tokens or None in tokens)))
        return True

    def _in_live_hands(self, instance_id: str) -> bool:
        answer = self._in_live_hands_all([instance_id],
                                         self._decisions([instance_id]))[instance_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _in_live_hands_all(self, instance_ids: Sequence[str], decided: _Decisions,
                           ) -> dict[str, bool | Exception]:
        """Whether a worker that answers a ping runs a task of each instance (the workers
        any of them names pinged once). A worker on this host that does not answer but
        whose process still runs (busy burying a killed pool child, say) may yet finish
        or fail the task: CannotTell, never "no"."""
        now = time.monotonic()
        silent = {name for name, at in self._silent.items() if now - at < SILENT_FOR}
        metas = self._metas(instance_ids)
        marks = self._read({iid: [received_key(tid) for tid in metas[iid]]
                            for iid in instance_ids})
        workers: dict[str, set[str]] = {}
        for iid in instance_ids:
            names = set()
            for (tid, meta), received in zip(metas[iid].items(), marks[iid], strict=True):
                state, info = meta.get("status", "PENDING"), meta.get("result")
                # With task_track_started (a team's override: graduate leaves it off), the
                # STARTED state holds the worker's node name, and a killed worker leaves
                # that state behind for good.
                if state == "STARTED" and isinstance(info, dict):
                    names.add(str(info.get("hostname", "")))
                # Received, not yet finished: acknowledged early, perhaps not STARTED yet
                # (or held for its ETA), and able to move the instance on.
                elif state in ("PENDING", "RETRY") and received is not None and (
                        self._can_move_in(decided, iid, tid)):
                    names.add(received.decode() if isinstance(received, bytes)
                              else str(received))
            names.discard("")
            workers[iid] = names
        asked = {name for names in workers.values() for name in names} - silent
        answered: set[str] = set()
        if asked:
            replies = self.app.control.ping(destination=sorted(asked), timeout=PING_TIMEOUT,
                                            limit=len(asked))
            answered = {name for reply in replies for name in reply} & asked
        found: dict[str, bool | Exception] = {}
        for iid, names in workers.items():
            if names & answered:
                found[iid] = True
                continue
            # A silent worker is gone only where its process can be seen gone: one on
            # another host (registered workers elsewhere) may be slow to answer.
            alive = sorted(name for name in names if not proven_dead(name))
            # Only a worker that cannot answer any more is spared the next ping.
            self._silent.update(dict.fromkeys((names - silent) - set(alive), time.monotonic()))
            found[iid] = False if not alive else CannotTell(
                f"worker {alive[0]} ran a task of {iid} and did not answer a ping within "
                f"{PING_TIMEOUT:g} s, but its process still runs, or runs on another host "
                "where it cannot be seen: it may yet finish or fail the task")
        return found

    def _task_ids(self, instance_id: str) -> list[str]:
        ids = []
        flow = self._flow(instance_id)
        for node in flow.nodes:
            ids.append(task_id(instance_id, node.name))
            if isinstance(node, Parallel):
                ids += [task_id(instance_id, step.name) for step in node.steps]
                ids.append(task_id(instance_id, node.name, "failed"))
            if isinstance(node, Wait):
                ids.append(task_id(instance_id, node.name, "deadline"))
                ids.append(task_id(instance_id, "signal", node.signal))
        ids.extend(task_id(instance_id, "compensate", step.name)
                   for step in flow.steps if step.compensation)
        ids.extend(task_id(instance_id, wait_step.name)
                   for wait in self.flow.waits for wait_step in wait.notice_steps)
        ids.extend(task_id(instance_id, notice.name) for notice in self.flow.interrupt_steps)
        if self.flow.interrupt is not None:
            ids.append(task_id(instance_id, "signal", self.flow.interrupt.signal))
        ids.append(task_id(instance_id, "finish"))
        return ids

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """Every task of the instance that Celery knows, and how each wait was resolved.

        Celery stores a time only for finished tasks (`date_done`); a task still started
        or retrying is listed at the time of reading.
        """
        found = self.histories([instance_id])[instance_id]
        if isinstance(found, Exception):
            raise found
        return found

    def histories(self, instance_ids: Sequence[str],
                  ) -> dict[str, list[HistoryEvent] | Exception]:
        """`history` of each instance, read together: its tasks' metas, its deliveries
        and its waits' claims in pipelined round trips, STATUS_CHUNK instances at a time.
        For each: its history, or what `history` raises."""
        found: dict[str, list[HistoryEvent] | Exception] = {}
        for first in range(0, len(instance_ids), STATUS_CHUNK):
            chunk = instance_ids[first:first + STATUS_CHUNK]
            try:
                found.update(self._histories(chunk))
            except Exception as error:
                found.update(dict.fromkeys(chunk, error))
        return found

    def _histories(self, instance_ids: Sequence[str],
                   ) -> dict[str, list[HistoryEvent] | Exception]:
        now = time.time()
        metas = self._metas(instance_ids)
        deliveries = self._deliveries_of(instance_ids)
        claims = self._read({iid: [claim_key(iid, w.name) for w in self.flow.waits]
                             for iid in instance_ids})
        found: dict[str, list[HistoryEvent] | Exception] = {}
        for iid in instance_ids:
            try:  # one instance's record that cannot be read fails its history only
                found[iid] = self._history_of(iid, now, metas[iid], deliveries[iid],
                                              claims[iid])
            except Exception as error:
                found[iid] = error
        return found

    def _history_of(self, instance_id: str, now: float, metas: dict[str, dict[str, Any]],
                    deliveries: list[HistoryEvent], claims: list[Any]) -> list[HistoryEvent]:
        events = []
        for tid, meta in metas.items():
            state = str(meta.get("status", "PENDING"))
            if state == "PENDING":
                continue
            done = meta.get("date_done")
            at = _timestamp(datetime.fromisoformat(done) if isinstance(done, str) else done)
            events.append(HistoryEvent(at=now if at is None else at, kind=f"task {state}",
                                       detail=tid.removeprefix(f"{instance_id}:")))
        events.extend(deliveries)
        for wait, raw in zip(self.flow.waits, claims, strict=True):
            if raw is not None:
                claim = json.loads(raw)
                how = {"signal": claim["decision"], "deadline": "passed"}.get(
                    claim["by"], "arrived")
                events.append(HistoryEvent(
                    at=claim["at"], kind="wait resolved",
                    detail=f"{wait.name}: {claim['by']} {how} -> {claim['action']}",
                ))
        return sorted(events, key=lambda event: event.at)

    def _deliveries_of(self, instance_ids: Sequence[str]) -> dict[str, list[HistoryEvent]]:
        """When each delivery of a step's message began to run (a worker took it up), per
        instance, the lists of all of them read in one round trip.

        A delivery after the first one of an attempt shows that attempt cut short: the
        broker gave the message again because the worker running it died or lost its
        connection. A first delivery flagged redelivered was held up: the worker it was
        first given to had only taken it (prefetched), and never ran it."""
        lists: list[tuple[str, str, int]] = []
        for iid in instance_ids:
            steps = self._flow(iid).steps
            named = [(s.name, s) for s in steps]
            named += [(f"compensate:{s.name}", s) for s in steps if s.compensation]
            named += [(s.name, s) for w in self.flow.waits for s in w.notice_steps]
            named += [(s.name, s) for s in self.flow.interrupt_steps]
            lists += [(iid, name, retries) for name, step in named
                      for retries in range(step.retry.max_attempts)]
        # One script for all the lists, not an LRANGE each: most are empty (a retry that
        # never happened), and tens of thousands of commands cost the harness far more
        # to pack and parse than Redis to run.
        keys = [deliveries_key(iid, name, retries) for iid, name, retries in lists]
        client = self.resources.redis()
        try:
            raws = client.register_script(_READ_LISTS)(keys=keys)
        except redis.ResponseError:  # a Redis that runs no scripts: an LRANGE each
            pipeline = client.pipeline(transaction=False)
            for key in keys:
                pipeline.lrange(key, 0, -1)
            raws = pipeline.execute()
        events: dict[str, list[HistoryEvent]] = {iid: [] for iid in instance_ids}
        for (iid, name, retries), raw in zip(lists, raws, strict=True):
            for number, delivery in enumerate(map(json.loads, raw), start=1):
                at = float(delivery["at"])
                if number > 1:
                    events[iid].append(HistoryEvent(
                        at=at, kind="task redelivered", cut_short=True, taken_up=True,
                        detail=f"{name}: delivery {number} of attempt {retries + 1}"))
                elif delivery["redelivered"]:
                    events[iid].append(HistoryEvent(
                        at=at, kind="task redelivered", held_up=True, taken_up=True,
                        detail=(f"{name}: attempt {retries + 1} began on a redelivered "
                                "message (the worker it was first given to never ran it)")))
                else:
                    events[iid].append(HistoryEvent(
                        at=at, kind="task started", taken_up=True,
                        detail=f"{name}: attempt {retries + 1}"))
        return events
