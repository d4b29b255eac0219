"""ADRs that move a flow from planned to shipped, one gate at a time, on pinned evidence.

`graduate adr new FLOW` writes `docs/adr/NNNN-graduate-FLOW.md`; `attach` pins runs,
matrices and JUnit reports to it by sha256 and rewrites its runbooks from them
(`graduate.adr.runbook`); `promote` moves its status when the gate
passes (`graduate.adr.gates`) and records who, when and on what; `check` verifies in
CI that every ADR's status is still supported by its evidence. The lifecycle is
described for users in docs/adr-lifecycle.md.
"""

from graduate.adr.document import AdrDocument, find_document
from graduate.adr.gates import GateItem, GatePolicy, GateResult, evaluate, load_policy
from graduate.adr.lifecycle import (
    Attached,
    Finding,
    Promotion,
    Standing,
    attach,
    check,
    default_actor,
    new_adr,
    parse_status,
    promote,
    standings,
    write_runbooks,
)
from graduate.adr.record import AdrError, AdrRecord, Attachment, Status, Transition

__all__ = [
    "AdrDocument", "AdrError", "AdrRecord", "Attached", "Attachment", "Finding", "GateItem",
    "GatePolicy", "GateResult", "Promotion", "Standing", "Status", "Transition", "attach",
    "check", "default_actor", "evaluate", "find_document", "load_policy", "new_adr",
    "parse_status", "promote", "standings", "write_runbooks",
]
