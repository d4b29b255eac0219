"""The Dealix pilot, spikes/partner_approval.toml, on every engine, as its specification
reads: a rejection voids the CRM draft and then sends one rejection notice; a passed
deadline voids it and then sends one expiry notice; and compensation follows the point of
failure: a failure after the CRM update reverts it (and voids the draft), a failure after
the envelope was sent voids the envelope too, newest first, with no notice.

What each test reads is the ledger: every call that landed, in the order it landed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState
from graduate.config import Settings
from graduate.flow import load_flow
from graduate.ledger import Ledger
from graduate.runner import Failure
from tests.contract.test_engines import assert_traced, run
from tests.contract.test_spikes import copy_of

PILOT = Path(__file__).resolve().parents[2] / "spikes" / "partner_approval.toml"

# (kind, step, effect) of each call that landed.
VALIDATED = [("effect", "validate_partner", "partners.validate"),
             ("effect", "create_packet", "crm.create_draft")]
UPDATED = [*VALIDATED, ("effect", "update_crm", "crm.update_partner")]
SENT = [*UPDATED, ("effect", "send_esign", "esign.send_envelope")]
VOID_DRAFT = ("compensation", "create_packet", "crm.void_draft")
REVERT_CRM = ("compensation", "update_crm", "crm.revert_draft")
VOID_ENVELOPE = ("compensation", "send_esign", "esign.void_envelope")


def landed(settings: Settings, instance_id: str) -> list[tuple[str, str, str]]:
    return [(e.kind, e.step, e.effect)
            for e in Ledger(settings.ledger).effects(instance_id=instance_id)
            if e.outcome.value in ("applied", "absorbed")]


@pytest.mark.parametrize("engine", engine_names())
def test_a_rejection_voids_the_draft_then_sends_one_rejection_notice(
        settings: Settings, tmp_path: Path, engine: str) -> None:
    path = copy_of(PILOT, tmp_path)

    result = run(settings, path, engine, decisions={"approval": "reject"})

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert item.detail == "rejected at approval"
    assert landed(settings, item.instance_id) == [
        *VALIDATED, VOID_DRAFT,
        ("effect", "approval.rejected_notice", "notify.send_rejection")]
    assert item.duplicates == 0


@pytest.mark.parametrize("engine", engine_names())
def test_a_passed_deadline_voids_the_draft_then_sends_one_expiry_notice(
        settings: Settings, tmp_path: Path, engine: str) -> None:
    path = copy_of(PILOT, tmp_path, deadline=("approval", 2.0))

    result = run(settings, path, engine, decisions={})

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert item.detail == "deadline of approval passed"
    assert landed(settings, item.instance_id) == [
        *VALIDATED, VOID_DRAFT,
        ("effect", "approval.expired_notice", "notify.send_expiry")]
    assert item.duplicates == 0


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize(("failing", "before", "undo"), [
    # After the CRM update, before the e-signature request: revert the CRM, void the draft.
    ("send_esign", UPDATED, [REVERT_CRM, VOID_DRAFT]),
    # After the envelope is sent, before it is signed: void the envelope first.
    ("send_confirmation", SENT, [VOID_ENVELOPE, REVERT_CRM, VOID_DRAFT]),
], ids=["after-crm-update", "after-envelope-sent"])
def test_compensation_follows_the_point_of_failure(
        settings: Settings, tmp_path: Path, engine: str, failing: str,
        before: list[tuple[str, str, str]], undo: list[tuple[str, str, str]]) -> None:
    path = copy_of(PILOT, tmp_path)

    result = run(settings, path, engine, decisions={"approval": "approve"},
                 failures=(Failure(step=failing, mode="permanent"),))

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert item.detail.startswith(f"step {failing} failed"), item.detail
    # No notice: a failed step is no ending of the wait.
    assert landed(settings, item.instance_id) == [*before, *undo]
    assert_traced(settings, load_flow(path), result, engine)
