"""The same business key started twice while the first instance is in flight: a retried
webhook, a double click.

The second start asks the engine what a caller would (`Engine.start_duplicate`): the same
instance ID, business key and correlation ID, in a request of its own (a new trace, which
the second start's effects carry in the ledger). At once, the duplicate comes while the
first instance is paused at the point; with the `crash` option, the worker holding the
first instance is killed first, as when a caller retries because its first call timed
out on a dying worker. The verdict (`graduate.check.judge_starts`): exactly one set of
effects per business key, or a visible refusal.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from graduate.chaos.faults import (
    EVERY,
    FAULT_FIRED,
    Fault,
    FaultContext,
    FaultOption,
    FaultPlan,
)
from graduate.check import SecondStart
from graduate.runs.supervisor import WORKER_STARTED
from graduate.runs.timeline import EventKind
from graduate.runs.workers import Worker

NAME = "double-start"
CRASH = FaultOption("crash", False, "first SIGKILL the worker holding the instance, then "
                                    "start the duplicate",
                    sentence="after a SIGKILL of the worker holding the instance")
STARTED_AGAIN = EventKind("second-start-accepted", "the same business key started again: "
                                                   "accepted", "fault")
REFUSED = EventKind("second-start-refused", "the same business key started again: refused "
                                            "by the engine", "recovery")


class DoubleStart(Fault):
    name = NAME
    description = ("start the same business key again while its instance is in flight (a "
                   "retried webhook, a double click)")
    title = "a double start"
    options = (CRASH, EVERY)
    events = (FAULT_FIRED, STARTED_AGAIN, REFUSED, WORKER_STARTED)
    group = "operator"
    # Nothing is interrupted at once; after a crash the first instance's resume is the
    # kill-worker fault's question, and this fault judges the starts.
    expects_resume = False

    def variant(self, plan: FaultPlan) -> str:
        when = "after a worker crash" if plan.option(CRASH.name) else "at once"
        scope = ", every instance in flight" if plan.option(EVERY.name) else ""
        return f" ({when}{scope})"

    def fire(self, context: FaultContext) -> None:
        session, plan = context.session, context.plan
        targets = context.in_flight()
        workers = session.workers
        killed: list[Worker] = []
        if plan.option(CRASH.name):
            for victim in _holders(context, targets):
                workers.kill(victim)
                killed.append(victim)
        context.timeline.add(FAULT_FIRED, f"second start of {len(targets)} business key(s)"
                             + (f" after SIGKILL to {', '.join(v.name for v in killed)}"
                                if killed else ""))
        requests = {r.instance_id: r for r in session.requests}
        for iid in targets:
            again = replace(requests[iid], trace_id=uuid.uuid4().hex)
            at = time.time()
            refused = session.engine.start_duplicate(again)
            context.acts.start_again(iid, SecondStart(again.trace_id, at, refused))
            if refused is None:
                context.timeline.add(STARTED_AGAIN, f"{iid} (trace {again.trace_id})", at=at,
                                     instance=iid)
            else:
                context.timeline.add(REFUSED, f"{iid}: {refused}", at=at, instance=iid)
        context.release()
        for victim in killed:
            workers.replace(victim, plan.restart_delay)


def _holders(context: FaultContext, targets: list[str]) -> list[Worker]:
    """The workers holding the targets paused at a step's point (the first worker when
    they wait or hold no step), each once."""
    plan, session = context.plan, context.session
    holders: dict[tuple[str, int], Worker] = {}
    for iid in targets:
        hit = (session.ledger.reached(iid, plan.step or "", plan.point)  # type: ignore[arg-type]
               if plan.point in ("before-effect", "after-effect") else None)
        worker = session.workers.holding(hit)
        holders.setdefault((worker.host, worker.group), worker)
    return list(holders.values())


FAULT = DoubleStart()
