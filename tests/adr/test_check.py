"""`graduate adr check` and `graduate adr status`: claims held against their evidence."""

from __future__ import annotations

from graduate.evidence import content_hash
from tests.adr.conftest import FLOW, Project


def test_check_passes_on_intact_evidence(project: Project) -> None:
    project.approved()

    result = project.cli("adr", "check")

    assert result.code == 0, result.text
    assert "1 ADR(s) checked, 0 problem(s)" in result.out


def test_check_with_no_adrs_passes(project: Project) -> None:
    result = project.ok("adr", "check")

    assert "0 ADR(s) checked" in result.out


def test_check_catches_evidence_edited_after_promotion(project: Project) -> None:
    project.approved()
    run_id = project.adr().record.evidence[0].id
    path = project.store.run_path(run_id)
    path.write_text(path.read_text().replace('"verdict": "completed"', '"verdict": "lost"'))

    result = project.cli("adr", "check")

    assert result.code == 1
    assert (f"FAIL 0003-graduate-{FLOW}.md: every attached file matches the hash it was "
            f"pinned with: run {run_id}: .graduate/evidence/runs/{run_id}.json changed since "
            "it was attached") in result.out


def test_check_catches_a_missing_evidence_file(project: Project) -> None:
    project.approved()
    run_id = project.adr().record.evidence[1].id
    project.store.run_path(run_id).unlink()

    result = project.cli("adr", "check")

    assert result.code == 1
    assert f".graduate/evidence/runs/{run_id}.json is missing" in result.out
    # Without that run, the gate of the claimed status no longer passes either.
    assert "no attached temporal run of" in result.out


def test_check_catches_a_status_set_by_hand(project: Project) -> None:
    project.spiking()
    project.edit_adr('status = "spiking"', 'status = "shipped"')

    result = project.cli("adr", "check")

    assert result.code == 1
    assert "status is shipped but the last move in its history is to spiking" in result.out
    assert "no JUnit report attached" in result.out


def test_check_catches_a_pin_rewritten_by_hand(project: Project) -> None:
    project.spiking()
    attachment = project.adr().record.evidence[0]
    path = project.store.run_path(attachment.id)
    path.write_text(path.read_text() + "\n")
    # Edit the evidence and forge the attachment's hash; the promotion's pin remains.
    head, _, tail = project.adr_path().read_text().rpartition(
        f'sha256 = "{attachment.sha256}"')
    project.adr_path().write_text(f'{head}sha256 = "{content_hash(path)}"{tail}')

    result = project.cli("adr", "check")

    assert result.code == 1
    assert f"run {attachment.id} was pinned as sha256 {attachment.sha256[:12]}" in result.out
    assert "when the ADR became spiking" in result.out


def test_check_reports_a_broken_front_block(project: Project) -> None:
    project.spiking()
    project.edit_adr("record_version = 1", "record_version = [")

    result = project.cli("adr", "check")

    assert result.code == 1
    assert "the front block is not valid TOML" in result.out


def test_check_runs_the_gate_of_the_current_status(project: Project) -> None:
    # Approved, then the flow loses a class: the claim is no longer supported.
    project.approved()
    spike = project.root / "spikes" / f"{FLOW}.toml"
    spike.write_text(spike.read_text().replace('approval_class = "A2"', ""))

    result = project.cli("adr", "check")

    assert result.code == 1
    assert "approval_class is missing" in result.out


def test_status_lists_what_each_adr_lacks_for_its_next_status(project: Project) -> None:
    project.ok("adr", "new", FLOW)

    planned = project.ok("adr", "status")
    assert "planned" in planned.out
    assert "spiking" in planned.out
    assert "at least one run or matrix attached" in planned.out

    project.ok("adr", "attach", "3", *project.passing_runs())
    ready = project.ok("adr", "status")
    assert "nothing: graduate adr promote 3 --to spiking" in ready.out

    project.ok("adr", "promote", "3", "--to", "spiking")
    project.ok("adr", "promote", "3", "--to", "approved")
    approved = project.ok("adr", "status")
    assert "a passing crash-resume test run" in approved.out
    assert "every item of the Security gate ticked" in approved.out
    assert "every item of the Release checklist ticked" in approved.out


def test_status_shows_a_broken_adr_as_invalid(project: Project) -> None:
    project.ok("adr", "new", FLOW)
    project.edit_adr('status = "planned"', 'status = "maybe"')

    result = project.ok("adr", "status")

    assert "invalid" in result.out
    assert "'maybe' is not a status" in result.out


def test_status_without_adrs_says_how_to_start(project: Project) -> None:
    assert "graduate adr new FLOW" in project.ok("adr", "status").out


def test_check_catches_a_flow_changed_after_promotion(project: Project) -> None:
    """Evidence speaks for the flow it ran: a step's timeout edited after approval
    leaves the approved ADR without evidence for the flow as it is now."""
    project.approved()
    project.edit_spike('timeout = "10s"', 'timeout = "2s"')

    result = project.cli("adr", "check")

    assert result.code == 1
    assert ("it ran another definition of the flow (nodes.create_record.timeout: 10.0 -> "
            "2.0)") in result.out
    assert "no attached temporal run of kill-worker that counts" in result.out


def test_a_changed_description_is_not_a_changed_flow(project: Project) -> None:
    project.approved()
    project.edit_spike('description = "', 'description = "Reworded. ')

    assert project.cli("adr", "check").code == 0
