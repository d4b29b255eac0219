"""`graduate inventory` on the project's own Celery pilot (examples/partner_approval_app):
the state kept in SQL, the helpers it calls, the sweep, the link_error handler and the
Temporal version of the same flow are all read as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.flow import Step, load_flow
from graduate.migrate.inventory import FindingKind, Inventory, Recommendation, inventory
from graduate.migrate.inventory.flowfile import flow_toml

EXAMPLE = Path(__file__).parents[2] / "examples" / "partner_approval_app"


@pytest.fixture(scope="module")
def pilot() -> Inventory:
    if not EXAMPLE.is_dir():
        pytest.fail(f"{EXAMPLE} is missing: the example app is part of the repository")
    return inventory(EXAMPLE)


def test_the_pilot_should_graduate_on_all_four_criteria(pilot: Inventory) -> None:
    (flow,) = pilot.flows
    assert flow.recommendation == Recommendation.GRADUATE
    assert flow.classification == "long-lived-durable"
    assert flow.systems == ("crm", "esign", "notify", "partners")  # through clients.*
    assert {s.criterion: s.leans for s in flow.scores} == {
        "duration": "workflow", "state": "workflow", "compensation": "workflow",
        "failure domain": "workflow"}
    assert flow.human_wait is not None  # rows 'pending' in the approvals table


def test_state_kept_in_sql_and_advanced_through_helpers(pilot: Inventory) -> None:
    writes = {(f.name, f.detail) for f in pilot.of_kind(FindingKind.STATUS_WRITE)}
    assert ("create_packet", "status = 'pending' (table approvals)") in writes
    assert ("decide", "status = ? (table approvals) (in _settle(), which decide calls)") in writes
    sweeps = [f.detail for f in pilot.of_kind(FindingKind.STATE_SWEEP)]
    assert sweeps == ["periodic query of rows with status = 'pending' (table approvals)"]
    tasks = {f.name: f.detail for f in pilot.of_kind(FindingKind.TASK)}
    assert "autoretry_for=[ConnectionError, TimeoutError]" in tasks["create_packet"]  # **RETRIES


def test_the_same_commitments_from_celery_and_temporal(pilot: Inventory) -> None:
    shared = sorted(h.why.split(" ", 1)[0] for h in pilot.hazards
                    if h.rule == "two-sources-of-truth")
    # The five steps' calls, and the approver's reminder (beat's sweep on Celery, a
    # timer in the workflow on Temporal): one more commitment both versions make.
    assert shared == ["clients.crm_create_draft", "clients.crm_update_partner",
                      "clients.esign_send_envelope", "clients.notify_send_confirmation",
                      "clients.notify_send_reminder", "clients.partners_validate"]


def test_the_deadline_countdown_is_flagged_as_unknown(pilot: Inventory) -> None:
    unknown = [h for h in pilot.hazards if h.rule == "eta-not-known"]
    assert [h.task for h in unknown] == ["expire"]  # countdown=deadline: 72 h by default


def test_its_flow_file_waits_where_the_code_waits(pilot: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "pilot.toml"
    path.write_text(flow_toml(pilot, pilot.flows[0]))
    flow = load_flow(path)
    names = [n.name for n in flow.nodes]
    assert names[:3] == ["validate_partner", "create_packet", "decision"]
    assert "compensate" not in names  # it undoes: a compensation, not a step
    first = flow.node("validate_partner")
    assert isinstance(first, Step)
    assert first.effect == "partners.validate"
    packet = flow.node("create_packet")
    assert isinstance(packet, Step)
    assert packet.effect == "crm.create_draft"
