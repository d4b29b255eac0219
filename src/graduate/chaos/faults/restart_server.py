"""Kill the workflow server and start it again on its database."""

from __future__ import annotations

from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultPlan
from graduate.chaos.faults._restart import SERVICE_RESTARTED, restart

NAME = "restart-server"


class RestartServer(Fault):
    name = NAME
    description = "kill the Temporal server and start it again on its database"
    events = (FAULT_FIRED, SERVICE_RESTARTED)
    restarts = "server"
    group = "service"

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if not engine.capabilities.server:
            from graduate.chaos.faults import restart_broker

            instead = (f": its state is in the broker (see {restart_broker.NAME})"
                       if engine.capabilities.broker else "")
            return f"{engine.product} has no workflow server{instead}"
        return None

    def fire(self, context: FaultContext) -> None:
        restart(context, context.session.stack.temporal, "Temporal server")


FAULT = RestartServer()
