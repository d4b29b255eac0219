"""Partner approval on Temporal, written as the SDK's own samples write workflows.

Dataclass inputs; activities with explicit timeouts and retry policies; the human
decision as a signal, awaited with a deadline; compensation of the completed steps, in
reverse order, on a rejection, a passed deadline or a step that failed for good, then
the notice of a rejection or a passed deadline; and versioned changes guarded with
`workflow.patched`, so instances already in flight keep the code they started with.
Each external call is wrapped in `graduate.effect`.

graduate runs it from its declaration (`[tool.graduate.apps.partner_approval_app]`):
`create_worker` says what the worker runs, `start` starts one instance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import graduate
    from examples.partner_approval_app import clients
    from graduate.apps import TemporalWorker
    from graduate.flow import InstanceRequest

TASK_QUEUE_VARIABLE = "PARTNER_APPROVAL_TASK_QUEUE"
DEADLINE_VARIABLE = "PARTNER_APPROVAL_DEADLINE_SECONDS"
STEP_TIMEOUT = timedelta(seconds=10)
# A call a system turned down (clients.Refused) fails for good at once.
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                    maximum_interval=timedelta(seconds=2), maximum_attempts=5,
                    non_retryable_error_types=["Refused"])
# The versioned change: confirm only once the e-signature request is out (version 1
# confirmed first, and an envelope that failed for good left a confirmed partner with
# nothing to sign).
CONFIRM_AFTER_ENVELOPE = "confirm-after-envelope"
# The second change: remind the approver once half the deadline has passed with no
# decision (a timer in the workflow). Instances started before it wait as they did.
REMIND_HALF_WAY = "remind-half-way"
REMIND_AT = 0.5  # of the deadline
# How the approval wait ended other than by an approval; the workflow returns it.
Ending = Literal["rejected", "expired"]


@dataclass(frozen=True)
class PartnerRequest:
    tenant_id: str
    partner_id: str
    # Dealix's key, {tenant_id}:{workflow_type}:{entity_id}:{yyyymmdd}, fixed at start.
    # Every call of the approval carries it: each system keeps its keys per operation.
    key: str
    approval_deadline_seconds: float = 72 * 3600.0
    # The commitment's IDs, from the API call that started it: every system's audit
    # record of it carries them.
    correlation_id: str = ""
    trace_id: str = ""

    def trail(self, operation: str) -> clients.Trail:
        return clients.Trail(self.tenant_id, self.correlation_id, self.trace_id,
                             request_id=f"{self.key}:{operation}")


Activity = Callable[[PartnerRequest], None]


@dataclass(frozen=True)
class Decision:
    decision: str  # "approve" or "reject"


def _keyed(operation: str, call: Callable[[str, str, clients.Trail], bool],
           request: PartnerRequest) -> None:
    """A call to a system that honours the key: a retry after a lost worker reaches the
    system again, which absorbs it."""
    with graduate.effect(operation, key=request.key) as recorded:
        if call(request.partner_id, request.key, request.trail(operation)):
            recorded.absorbed()


def _unkeyed(operation: str, call: Callable[[str, clients.Trail], None],
             request: PartnerRequest) -> None:
    """A call to the notification service, which takes no key: a retry sends again."""
    with graduate.effect(operation, key=request.key):
        call(request.partner_id, request.trail(operation))


@activity.defn(name="partners.validate")
def validate_partner(request: PartnerRequest) -> None:
    _keyed("partners.validate", clients.partners_validate, request)


@activity.defn(name="crm.create_draft")
def create_packet(request: PartnerRequest) -> None:
    _keyed("crm.create_draft", clients.crm_create_draft, request)


@activity.defn(name="crm.update_partner")
def update_crm(request: PartnerRequest) -> None:
    _keyed("crm.update_partner", clients.crm_update_partner, request)


@activity.defn(name="esign.send_envelope")
def send_esign(request: PartnerRequest) -> None:
    _keyed("esign.send_envelope", clients.esign_send_envelope, request)


@activity.defn(name="notify.send_confirmation")
def send_confirmation(request: PartnerRequest) -> None:
    _unkeyed("notify.send_confirmation", clients.notify_send_confirmation, request)


@activity.defn(name="notify.send_reminder")
def send_reminder(request: PartnerRequest) -> None:
    _keyed("notify.send_reminder", clients.notify_send_reminder, request)


@activity.defn(name="notify.send_rejection")
def send_rejection(request: PartnerRequest) -> None:
    _unkeyed("notify.send_rejection", clients.notify_send_rejection, request)


@activity.defn(name="notify.send_expiry")
def send_expiry(request: PartnerRequest) -> None:
    _unkeyed("notify.send_expiry", clients.notify_send_expiry, request)


@activity.defn(name="crm.void_draft")
def void_draft(request: PartnerRequest) -> None:
    _keyed("crm.void_draft", clients.crm_void_draft, request)


@activity.defn(name="crm.revert_draft")
def revert_crm_update(request: PartnerRequest) -> None:
    _keyed("crm.revert_draft", clients.crm_revert_draft, request)


@activity.defn(name="esign.void_envelope")
def void_envelope(request: PartnerRequest) -> None:
    _keyed("esign.void_envelope", clients.esign_void_envelope, request)


NOTICES: dict[Ending, Activity] = {"rejected": send_rejection, "expired": send_expiry}


@workflow.defn(name="PartnerApproval")
class PartnerApproval:
    def __init__(self) -> None:
        self._decision: str | None = None
        self._undo: list[Activity] = []  # compensations of the completed steps

    @workflow.signal(name="approval")
    def approval(self, decision: Decision) -> None:
        self._decision = decision.decision

    @workflow.run
    async def run(self, request: PartnerRequest) -> str:
        """Returns "approved", or how the approval wait ended: "rejected", "expired"."""
        try:
            await self._step(validate_partner, request)
            await self._step(create_packet, request, undo=void_draft)
            ending = await self._await_decision(request)
            if ending is None:
                await self._step(update_crm, request, undo=revert_crm_update)
                if workflow.patched(CONFIRM_AFTER_ENVELOPE):
                    await self._step(send_esign, request, undo=void_envelope)
                    await self._step(send_confirmation, request)
                else:  # started before the change: keep version 1's order
                    await self._step(send_confirmation, request)
                    await self._step(send_esign, request, undo=void_envelope)
                return "approved"
        except ActivityError:
            await self._compensate(request)
            raise
        # The drafts are voided before anyone is told.
        await self._compensate(request)
        await self._step(NOTICES[ending], request)
        return ending

    async def _await_decision(self, request: PartnerRequest) -> Ending | None:
        """None once approved; otherwise how the wait ended."""
        deadline = timedelta(seconds=request.approval_deadline_seconds)
        try:
            if workflow.patched(REMIND_HALF_WAY):
                await self._await_decision_with_reminder(request, deadline)
            else:  # started before the reminder: wait as version 1 did
                await workflow.wait_condition(lambda: self._decision is not None,
                                              timeout=deadline)
        except TimeoutError:
            return "expired"
        return None if self._decision == "approve" else "rejected"

    async def _await_decision_with_reminder(self, request: PartnerRequest,
                                            deadline: timedelta) -> None:
        """Wait for the decision; at REMIND_AT of the deadline, if none came, remind the
        approver once and wait out the rest. TimeoutError when the deadline passes."""
        began = workflow.now()
        try:
            await workflow.wait_condition(lambda: self._decision is not None,
                                          timeout=deadline * REMIND_AT)
            return
        except TimeoutError:
            pass
        try:
            await workflow.execute_activity(send_reminder, request,
                                            start_to_close_timeout=STEP_TIMEOUT,
                                            retry_policy=RETRY)
        except ActivityError:
            # A reminder that could not be sent does not undo the approval.
            workflow.logger.warning("the approval reminder could not be sent")
        left = deadline - (workflow.now() - began)
        if self._decision is None and left <= timedelta(0):
            raise TimeoutError
        await workflow.wait_condition(lambda: self._decision is not None,
                                      timeout=max(left, timedelta(milliseconds=1)))

    async def _step(self, step: Activity, request: PartnerRequest,
                    undo: Activity | None = None) -> None:
        await workflow.execute_activity(step, request, start_to_close_timeout=STEP_TIMEOUT,
                                        retry_policy=RETRY)
        if undo is not None:
            self._undo.append(undo)

    async def _compensate(self, request: PartnerRequest) -> None:
        """Undo the completed steps, newest first: the envelope, the CRM update, the
        draft, as far as the approval got."""
        for undo in reversed(self._undo):
            await workflow.execute_activity(undo, request, start_to_close_timeout=STEP_TIMEOUT,
                                            retry_policy=RETRY)
        self._undo.clear()


def create_worker() -> TemporalWorker:
    """What the app's worker runs (the declared worker factory)."""
    return TemporalWorker(
        task_queue=os.environ.get(TASK_QUEUE_VARIABLE, "partner-approval"),
        workflows=[PartnerApproval],
        activities=[validate_partner, create_packet, update_crm, send_esign,
                    send_confirmation, send_reminder, send_rejection, send_expiry,
                    void_draft, revert_crm_update, void_envelope])


async def start(client: Client, request: InstanceRequest) -> None:
    """Start one approval for the partner `request.entity_id` (the declared start)."""
    deadline = float(os.environ.get(DEADLINE_VARIABLE, "259200"))  # 72 h
    partner = PartnerRequest(
        tenant_id=request.tenant_id, partner_id=request.entity_id,
        key=f"{request.tenant_id}:partner_approval:{request.entity_id}:{request.date}",
        approval_deadline_seconds=deadline, correlation_id=request.correlation_id,
        trace_id=request.trace_id)
    await client.start_workflow(PartnerApproval.run, partner, id=request.instance_id,
                                task_queue=create_worker().task_queue)
