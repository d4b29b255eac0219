"""Kill the broker and start it again on its data."""

from __future__ import annotations

from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultPlan
from graduate.chaos.faults._restart import SERVICE_RESTARTED, restart

NAME = "restart-broker"


class RestartBroker(Fault):
    name = NAME
    description = "kill the broker (Redis) and start it again on its data"
    events = (FAULT_FIRED, SERVICE_RESTARTED)
    restarts = "broker"
    group = "service"

    def applies(self, plan: FaultPlan, engine: EngineDescription) -> str | None:
        if not engine.capabilities.broker:
            from graduate.chaos.faults import restart_server

            instead = (f": workers talk to the server (see {restart_server.NAME})"
                       if engine.capabilities.server else "")
            return f"{engine.product} has no broker{instead}"
        return None

    def fire(self, context: FaultContext) -> None:
        restart(context, context.session.stack.redis, "broker")


FAULT = RestartBroker()
