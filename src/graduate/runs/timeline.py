"""The timeline of a run: each act of the harness, the supervisor and the human, in order.

Every kind of event is described once, with the title and category a report shows: the
session's here, the supervisor's in `runs/supervisor.py`, each fault's in its module
(`graduate.chaos.faults.timeline_events` gathers them all).
"""

from __future__ import annotations

import time
from bisect import insort
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

Category: TypeAlias = Literal["info", "signal", "point", "fault", "stop", "recovery"]


@dataclass(frozen=True)
class EventKind:
    """One kind of timeline event: its name in the evidence, and how a report shows it."""

    kind: str
    title: str
    category: Category


INSTANCES_STARTED = EventKind("instances-started", "instances started", "info")
SIGNAL_SENT = EventKind("signal-sent", "decision signalled (the human's answer)", "signal")
RUN_ENDED = EventKind("run-ended", "run ended", "info")
# An unfinished instance that nothing can move before a known time after the run's
# deadline (a dead worker's unacknowledged messages), so the run ended without waiting.
HELD_UP = EventKind("held-up", "held up past the run's deadline", "info")
VERSIONS_RAN = EventKind("versions-ran", "which version of the code ran each step", "info")
SESSION_EVENTS = (INSTANCES_STARTED, SIGNAL_SENT, RUN_ENDED, HELD_UP, VERSIONS_RAN)


@dataclass(frozen=True)
class TimelineEvent:
    at: float  # seconds since the run started
    kind: str
    detail: str = ""
    instance: str | None = None  # set when the act concerns one instance only


@dataclass
class Timeline:
    started: float = field(default_factory=time.time)
    events: list[TimelineEvent] = field(default_factory=list)
    listener: Callable[[TimelineEvent], None] | None = None

    def add(self, kind: EventKind, detail: str = "", at: float | None = None,
            instance: str | None = None) -> float:
        moment = time.time() if at is None else at
        event = TimelineEvent(round(moment - self.started, 3), kind.kind, detail, instance)
        # In time order: an act is added once it is done, with the moment it began (a
        # worker from its spawn, a fleet's events as its ledger recorded them), which may
        # come before events added meanwhile. Of events at one time, the first added
        # stays first.
        insort(self.events, event, key=lambda e: e.at)
        if self.listener is not None:
            self.listener(event)
        return moment

    def first(self, kind: EventKind) -> float | None:
        """When the first event of `kind` happened (epoch seconds), if one did."""
        return next((self.started + e.at for e in self.events if e.kind == kind.kind), None)
