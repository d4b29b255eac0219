"""Partner approval on Temporal, written as the SDK's own samples write workflows.

Dataclass inputs; activities with explicit timeouts and retry policies; the human
decision as a signal, awaited with a deadline; compensation of the completed steps, in
reverse order, on a rejection, a passed deadline or a step that failed for good; and a
versioned change guarded with `workflow.patched`, so instances already in flight keep
the order they started with. Each external call is wrapped in `graduate.effect`.

graduate runs it from its declaration (`[tool.graduate.apps.partner_approval_app]`):
`create_worker` says what the worker runs, `start` starts one instance.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

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
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200),
                    maximum_interval=timedelta(seconds=2), maximum_attempts=5)
# The versioned change: welcome the partner only once the portal has activated them
# (version 1 sent the welcome first, and a failed activation left a welcomed stranger).
WELCOME_AFTER_ACTIVATION = "welcome-after-activation"
# The second change: remind the approver once half the deadline has passed with no
# decision (a timer in the workflow). Instances started before it wait as they did.
REMIND_HALF_WAY = "remind-half-way"
REMIND_AT = 0.5  # of the deadline


@dataclass(frozen=True)
class PartnerRequest:
    tenant_id: str
    partner_id: str
    key_prefix: str  # {tenant_id}:{flow}:{entity_id}:{yyyymmdd}, fixed at start
    approval_deadline_seconds: float = 72 * 3600.0
    # The commitment's IDs, from the API call that started it: every system's audit
    # record of it carries them.
    correlation_id: str = ""
    trace_id: str = ""

    def key(self, step: str) -> str:
        return f"{self.key_prefix}:{step}"

    def trail(self, step: str) -> clients.Trail:
        return clients.Trail(self.tenant_id, self.correlation_id, self.trace_id,
                             request_id=self.key(step))


Activity = Callable[[PartnerRequest], None]


@dataclass(frozen=True)
class Decision:
    decision: str  # "approve" or "reject"


@activity.defn(name="crm.create_draft")
def create_draft(request: PartnerRequest) -> None:
    key = request.key("create_record")
    with graduate.effect("crm.create_draft", key=key):
        clients.crm_create_draft(request.partner_id, key, request.trail("create_record"))


@activity.defn(name="approvals.request")
def request_approval(request: PartnerRequest) -> None:
    key = request.key("request_approval")
    with graduate.effect("approvals.request", key=key):
        clients.approvals_request(request.partner_id, key, request.trail("request_approval"))


@activity.defn(name="partner_portal.activate")
def activate(request: PartnerRequest) -> None:
    with graduate.effect("partner_portal.activate", key=request.key("activate")):
        clients.portal_activate(request.partner_id, request.trail("activate"))


@activity.defn(name="notify.send_welcome")
def send_welcome(request: PartnerRequest) -> None:
    with graduate.effect("notify.send_welcome", key=request.key("notify")):
        clients.notify_send_welcome(request.partner_id, request.trail("notify"))


@activity.defn(name="notify.send_reminder")
def send_reminder(request: PartnerRequest) -> None:
    key = request.key("approval.reminder")
    with graduate.effect("notify.send_reminder", key=key) as call:
        # Keyed: a retry after a lost worker reaches the service again, which absorbs it.
        if clients.notify_send_reminder(request.partner_id, key,
                                        request.trail("approval.reminder")):
            call.absorbed()


@activity.defn(name="crm.void_draft")
def void_draft(request: PartnerRequest) -> None:
    key = request.key("create_record.compensation")
    with graduate.effect("crm.void_draft", key=key):
        clients.crm_void_draft(request.partner_id, key,
                               request.trail("create_record.compensation"))


@activity.defn(name="approvals.withdraw")
def withdraw_approval(request: PartnerRequest) -> None:
    key = request.key("request_approval.compensation")
    with graduate.effect("approvals.withdraw", key=key):
        clients.approvals_withdraw(request.partner_id, key,
                                   request.trail("request_approval.compensation"))


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
        try:
            await self._step(create_draft, request, undo=void_draft)
            await self._step(request_approval, request, undo=withdraw_approval)
            deadline = timedelta(seconds=request.approval_deadline_seconds)
            try:
                if workflow.patched(REMIND_HALF_WAY):
                    await self._await_decision_with_reminder(request, deadline)
                else:  # started before the reminder: wait as version 1 did
                    await workflow.wait_condition(lambda: self._decision is not None,
                                                  timeout=deadline)
            except TimeoutError:
                await self._compensate(request)
                return "expired"
            if self._decision != "approve":
                await self._compensate(request)
                return "rejected"
            if workflow.patched(WELCOME_AFTER_ACTIVATION):
                await self._step(activate, request)
                await self._step(send_welcome, request)
            else:  # started before the change: keep version 1's order
                await self._step(send_welcome, request)
                await self._step(activate, request)
        except ActivityError:
            await self._compensate(request)
            raise
        return "activated"

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
        for undo in reversed(self._undo):
            await workflow.execute_activity(undo, request, start_to_close_timeout=STEP_TIMEOUT,
                                            retry_policy=RETRY)
        self._undo.clear()


def create_worker() -> TemporalWorker:
    """What the app's worker runs (the declared worker factory)."""
    return TemporalWorker(
        task_queue=os.environ.get(TASK_QUEUE_VARIABLE, "partner-approval"),
        workflows=[PartnerApproval],
        activities=[create_draft, request_approval, activate, send_welcome, send_reminder,
                    void_draft, withdraw_approval])


async def start(client: Client, request: InstanceRequest) -> None:
    """Start one approval for the partner `request.entity_id` (the declared start)."""
    deadline = float(os.environ.get(DEADLINE_VARIABLE, "259200"))  # 72 h
    partner = PartnerRequest(
        tenant_id=request.tenant_id, partner_id=request.entity_id,
        key_prefix=f"{request.tenant_id}:partner_approval:{request.entity_id}:{request.date}",
        approval_deadline_seconds=deadline, correlation_id=request.correlation_id,
        trace_id=request.trace_id)
    await client.start_workflow(PartnerApproval.run, partner, id=request.instance_id,
                                task_queue=create_worker().task_queue)
