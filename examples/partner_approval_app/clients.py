"""The partner approval pilot's external systems, as the team's code calls them.

In the team's repository these are HTTP clients of the CRM, the approvals service, the
partner portal and the notification service. Here they only describe the call, so the
example runs anywhere; what graduate checks is recorded by `graduate.effect` around them.
"""

from __future__ import annotations


def crm_create_draft(partner_id: str, key: str) -> None:
    """POST /partners/drafts with Idempotency-Key: key."""


def crm_void_draft(partner_id: str, key: str) -> None:
    """DELETE /partners/drafts/{partner_id} with Idempotency-Key: key."""


def approvals_request(partner_id: str, key: str) -> None:
    """POST /approvals (a packet for the function head) with Idempotency-Key: key."""


def approvals_withdraw(partner_id: str, key: str) -> None:
    """POST /approvals/{partner_id}/withdraw with Idempotency-Key: key."""


def portal_activate(partner_id: str) -> None:
    """POST /portal/partners/{partner_id}/activate: the portal takes no idempotency key."""


def notify_send_welcome(partner_id: str) -> None:
    """POST /notifications/welcome: the notification service takes no key either."""
