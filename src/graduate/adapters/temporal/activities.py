"""The one activity: perform a step's effect on its external system, through the ledger."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from graduate.adapters.temporal import registry
from graduate.adapters.temporal.messages import (
    PERMANENT_ERROR_TYPE,
    TRANSIENT_ERROR_TYPE,
    EffectInput,
)
from graduate.errors import PermanentEffectError, TransientEffectError
from graduate.flow import Step
from graduate.ledger import Ledger

ENGINE_NAME = "temporal"


class EffectActivities:
    """Activities bound to one ledger; run in threads, so the ledger is per thread."""

    def __init__(self, ledger_url: str) -> None:
        self._ledger_url = ledger_url
        self._local = threading.local()

    def _ledger(self) -> Ledger:
        ledger: Ledger | None = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self._local.ledger = Ledger(self._ledger_url)
        return ledger

    @activity.defn(dynamic=True)
    def perform(self, args: Sequence[RawValue]) -> str:
        effect_input = activity.payload_converter().from_payload(args[0].payload, EffectInput)
        flow = registry.get(effect_input.flow).for_instance(effect_input.request)
        step = flow.node(effect_input.step)
        assert isinstance(step, Step)
        if activity.info().heartbeat_timeout:
            # Started: a heartbeat timeout counts from here. Without one the server
            # watches no heartbeat, and a step that cannot fail spares the RPC.
            activity.heartbeat()
        # A cancellation (a worker shutting down, an attempt the server timed out) is
        # raised into this thread wherever it runs, as for any synchronous activity; the
        # ledger's transaction rolls back on it, so no half-recorded call remains.
        try:
            outcome = self._ledger().call(
                flow, effect_input.request, step, attempt=activity.info().attempt,
                engine=ENGINE_NAME,
                kind="compensation" if effect_input.kind == "compensation" else "effect",
                # Alive while paused at a fault point; the SDK throttles the calls.
                heartbeat=activity.heartbeat,
            )
        except PermanentEffectError as error:
            raise ApplicationError(str(error), type=PERMANENT_ERROR_TYPE,
                                   non_retryable=True) from error
        except TransientEffectError as error:
            raise ApplicationError(str(error), type=TRANSIENT_ERROR_TYPE) from error
        return outcome.value
