"""Runbooks drawn from real evidence: the demo's committed runs (a real matrix on the
three engines), read as the ADR's attached evidence is read."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adr.document import AdrDocument
from graduate.adr.runbook import (
    LeftOut,
    Runbook,
    RunbookSection,
    build_runbook,
    render_runbook,
)
from graduate.evidence import read_run
from graduate.flow import Flow, load_flow
from graduate.runs.record import RunRecord
from tests.adr.conftest import FLOW, Project
from tests.sample import SAMPLE_FLOW, sample_run_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_runs() -> list[RunRecord]:
    return [read_run(path) for path in sample_run_files()]


@pytest.fixture(scope="module")
def spike() -> Flow:
    return load_flow(SAMPLE_FLOW)


@pytest.fixture(scope="module")
def runbook(spike: Flow, demo_runs: list[RunRecord]) -> Runbook:
    return build_runbook(spike, demo_runs, target_engine="temporal",
                         flow_ref="partner_approval")


def section(runbook: Runbook, title: str) -> RunbookSection:
    return next(s for s in runbook.sections if s.title == title)


def test_the_deploy_runbook_cites_the_guarded_deploy_that_held_and_the_one_that_broke(
        runbook: Runbook) -> None:
    deploy = section(runbook, "Deploy")
    text = "\n".join(deploy.procedure)
    # ecea69: Temporal, versioned deploy-change, completed; 48129a: unversioned, stuck.
    assert "behind its versioning guard: run `ecea69` kept the instances" in text
    assert "without the guard: run `48129a` (1 stuck) broke" in text
    assert "`activate` (partner_portal), `notify` (notify)" in text
    assert {o.run_id for o in deploy.observed} >= {"ecea69", "48129a", "59df48"}
    assert all("deploy-change" in o.description or "stop-worker" in o.description
               for o in deploy.observed)
    assert deploy.commands[0] == ("graduate chaos partner_approval -e temporal --fault "
                                  "deploy-change --at approval:during-wait --versioned "
                                  "--instances 3")


def test_the_rollback_runbook_undoes_what_applied_newest_first_from_the_flow(
        runbook: Runbook) -> None:
    rollback = section(runbook, "Rollback")
    undo = next(step for step in rollback.procedure if step.startswith("Compensate"))
    order = ["`notify` applied → no compensation declared",
             "`activate` applied → no compensation declared",
             "`request_approval` applied → `approvals.withdraw`",
             "`create_record` applied → `crm.void_draft`"]
    positions = [undo.index(item) for item in order]
    assert positions == sorted(positions)
    # The demo attached no rehearsal: the runbook says so instead of claiming one.
    assert any("No attached rehearsal on Temporal yet" in s for s in rollback.procedure)
    # Its expired approvals took the compensation path on every engine.
    assert {o.run_id for o in rollback.observed} == {"ba6a92", "30580d", "e25ce2"}
    assert "--fault rollback-rehearsal+all --at approval:during-wait" in rollback.commands[0]


def test_the_double_start_runbook_asks_for_evidence_it_does_not_have(
        runbook: Runbook) -> None:
    double = section(runbook, "Double start")
    assert double.observed == ()
    assert "`{tenant_id}:{flow}:{entity_id}:{date}`" in double.procedure[0]
    assert any("No attached double start on Temporal yet" in s for s in double.procedure)
    assert [c.split("--fault ")[1].split()[0] for c in double.commands] == [
        "double-start", "double-start+crash"]


def test_the_summary_shows_what_each_fault_lost_resumed_or_broke(runbook: Runbook) -> None:
    shown = {o.run_id: o for o in runbook.observed}
    assert len(shown) == len(sample_run_files())
    assert shown["b12fe3"].outcome == "failed"  # celery-chain, kill-worker: lost
    assert shown["b12fe3"].shown.startswith("1 lost")
    assert shown["31fad4"].shown == "1 completed; resumed exactly 1/1"
    assert shown["eb4a59"].outcome == "not applicable"


def test_the_commands_rehearse_on_the_gates_target_engine(
        spike: Flow, demo_runs: list[RunRecord]) -> None:
    other = build_runbook(spike, demo_runs, target_engine="celery-state-machine",
                          flow_ref="spikes/partner_approval.toml")
    commands = [c for s in other.sections for c in s.commands]
    assert all(c.startswith("graduate chaos spikes/partner_approval.toml -e "
                            "celery-state-machine ") for c in commands)
    assert any("Celery state machine" in s for s in section(other, "Deploy").procedure)


def test_the_section_is_rewritten_in_place_not_added_again(
        runbook: Runbook, tmp_path: Path) -> None:
    document = AdrDocument(tmp_path / "0001.md", record=None,  # type: ignore[arg-type]
                           body="# t\n\n## Evidence\n\n- run\n\n## Security gate\n\n- [ ] x\n")
    lines = render_runbook(runbook)
    once = document.replacing("Runbooks", lines, before="Security gate")
    twice = once.replacing("Runbooks", lines, before="Security gate")
    assert twice.body == once.body
    assert once.body.count("## Runbooks") == 1
    assert once.body.index("## Evidence") < once.body.index("## Runbooks") < (
        once.body.index("## Security gate"))
    assert once.tasks("Security gate") == document.tasks("Security gate")
    empty = build_runbook(load_flow(SAMPLE_FLOW), [],
                          target_engine="temporal", flow_ref="partner_approval")
    emptied = once.replacing("Runbooks", render_runbook(empty), before="Security gate")
    assert "No run is attached yet" in (emptied.section("Runbooks") or "")
    assert "`ecea69`" not in emptied.body


def of_an_older_definition(run: RunRecord, run_id: str) -> RunRecord:
    """`run` as if it had run the flow when `activate`'s timeout was 30 s, not 10 s."""
    definition = copy.deepcopy(run.flow.definition)
    next(n for n in definition["nodes"] if n.get("step") == "activate")["timeout"] = 30.0
    return replace(run, run_id=run_id, flow=replace(run.flow, definition=definition))


def test_runs_of_an_older_definition_are_named_as_left_out_and_cited_nowhere(
        spike: Flow, demo_runs: list[RunRecord], runbook: Runbook) -> None:
    older = [of_an_older_definition(run, f"old{n:03d}") for n, run in enumerate(demo_runs[:8])]

    mixed = build_runbook(spike, [*older, *demo_runs], target_engine="temporal",
                          flow_ref="partner_approval")

    assert mixed.observed == runbook.observed
    assert mixed.sections == runbook.sections
    assert mixed.left_out == (LeftOut(tuple(r.run_id for r in older),
                                      "nodes.activate.timeout: 30.0 -> 10.0"),)
    text = "\n".join(render_runbook(mixed))
    assert ("Left out: 8 attached run(s) of an older definition of the flow (`old000`, "
            "`old001`, `old002`, `old003`, `old004`, `old005` and 2 more, all in the Evidence "
            "section), which has changed since they ran (nodes.activate.timeout: 30.0 -> "
            "10.0)") in text
    assert "`old006`" not in text


def test_attach_rewrites_the_runbooks_from_the_runs_of_the_flow_as_it_is(
        project: Project) -> None:
    project.ok("adr", "new", FLOW)
    before = project.run(fault="stop-worker")
    project.ok("adr", "attach", "3", before)
    project.edit_spike('timeout = "10s"', 'timeout = "20s"')
    after = project.run(fault="stop-worker")

    project.ok("adr", "attach", "3", after)

    runbooks = project.adr().section("Runbooks") or ""
    assert f"| `{after}` | temporal | stop-worker" in runbooks
    assert f"| `{before}` |" not in runbooks
    assert f"Left out: 1 attached run(s) of an older definition of the flow (`{before}`)" \
        in runbooks
    assert "timeout: 10.0 -> 20.0" in runbooks
