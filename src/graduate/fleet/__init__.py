"""Workers on other hosts: `graduate worker` registers in the ledger database and takes
its fault commands from there, so the harness never needs a shell on another host.

`graduate.fleet.ledger` is the shared record (the registry of workers and the
commands sent to them); `graduate.fleet.agent` is what runs beside each worker.
"""

from graduate.fleet.ledger import (
    FLEET_EVENTS,
    Command,
    CommandKind,
    CommandResult,
    CommandState,
    Fenced,
    FleetEvent,
    FleetLedger,
    RegisteredWorker,
)

__all__ = [
    "FLEET_EVENTS",
    "Command",
    "CommandKind",
    "CommandResult",
    "CommandState",
    "Fenced",
    "FleetEvent",
    "FleetLedger",
    "RegisteredWorker",
]
