"""What the two restart faults share: kill a service graduate started, start it again."""

from __future__ import annotations

import time

from graduate.chaos.faults import FAULT_FIRED, FaultContext
from graduate.runs.timeline import EventKind
from graduate.services.local import LocalRedis, LocalTemporal

SERVICE_RESTARTED = EventKind("service-restarted", "service restarted", "recovery")


def restart(context: FaultContext, service: LocalTemporal | LocalRedis | None,
            what: str) -> None:
    # not_applicable() has ruled out services graduate did not start itself.
    assert service is not None
    assert service.process is not None
    process = service.process
    process.kill()
    context.timeline.add(FAULT_FIRED, f"SIGKILL to the {what} (pid {process.pid})")
    context.release()
    time.sleep(context.plan.restart_delay)  # the operator's reaction time, part of the scenario
    service.start()
    # From its start, not from when its readiness was seen: a worker may reconnect and
    # take work in between, and a recovery must not seem to end after work it allowed.
    assert service.process is not None
    context.timeline.add(SERVICE_RESTARTED, f"{what} back on the same port and data",
                         at=service.process.began_at)
