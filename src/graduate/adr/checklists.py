"""The checklists every graduate ADR carries, from the source document and ADR 0001.

The execution-fabric policy asks each new execution path to "pass security gate and
release checklist for the environment"; Dealix's ADR 0001 names the exit criteria of
a spike. Both lists are written into a new ADR as Markdown task lists. Teams may add
items; the items below must stay, identified by their bold label, and every item in
both sections must be ticked before the flow ships, except the items graduate can
prove: those are met by a passing run of their fault attached to the ADR, never by a
tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from graduate.chaos.faults import double_start, rollback_rehearsal


@dataclass(frozen=True)
class ChecklistItem:
    label: str  # the bold text that identifies the item; the explanation may be reworded
    explanation: str
    # The fault whose passing run on the target engine, attached to the ADR, proves the
    # item; such an item is met by that evidence only.
    proven_by: str | None = None


SECURITY_GATE_HEADING = "Security gate"
RELEASE_CHECKLIST_HEADING = "Release checklist"

SECURITY_GATE: tuple[ChecklistItem, ...] = (
    ChecklistItem("Secrets boundary reviewed",
                  "worker and client credentials (Temporal mTLS or API key, broker and "
                  "database URLs) come from the secret store, never from flow code, "
                  "logs or evidence"),
    ChecklistItem("Network boundaries reviewed",
                  "the hosts and ports each worker reaches (workflow server or broker, "
                  "each external system) are listed and nothing else is open"),
    ChecklistItem("Sensitivity class respected",
                  "S2/S3 data does not cross tools or providers without a policy review"),
    ChecklistItem("Human approval before irreversible effects",
                  "R2/R3 effects run only after an explicit human wait"),
    ChecklistItem("Correlation and trace IDs in audit records",
                  "every effect emits them and the audit records are persisted"),
    ChecklistItem("Threat assumptions written down",
                  "what the spike assumes about callers, workers and external systems"),
)

RELEASE_CHECKLIST: tuple[ChecklistItem, ...] = (
    ChecklistItem("Workflow code and tests in CI",
                  "the crash-resume suite runs on every change (compose file or Temporal "
                  "test server)"),
    ChecklistItem("Idempotency keys on external side effects",
                  "every effect carries a key that its external system honours"),
    ChecklistItem("Compensation path documented",
                  "what is undone, in which order, at each failure point"),
    ChecklistItem("Runbook: deploy",
                  "how workflow code is rolled out, with worker versioning"),
    ChecklistItem("Runbook: rollback",
                  "how to go back, and what happens to instances in flight"),
    ChecklistItem("Runbook: double start",
                  "what happens when the same instance is started twice (proven by an "
                  "attached passing run of `--fault double-start`)",
                  proven_by=double_start.NAME),
    ChecklistItem("Rollback rehearsal",
                  "cancel + compensation rehearsed before every worker upgrade that "
                  "changes workflow code (proven by an attached passing run of `--fault "
                  "rollback-rehearsal`)",
                  proven_by=rollback_rehearsal.NAME),
    ChecklistItem("Worker versioning documented",
                  "and adopted before the flow expands beyond the pilot"),
    ChecklistItem("Workflow types and task queues registered",
                  "no catch-all workers"),
    ChecklistItem("Product-owner sign-off",
                  "to move this flow, and to move more flows"),
)

CHECKLISTS: tuple[tuple[str, tuple[ChecklistItem, ...]], ...] = (
    (SECURITY_GATE_HEADING, SECURITY_GATE),
    (RELEASE_CHECKLIST_HEADING, RELEASE_CHECKLIST),
)
