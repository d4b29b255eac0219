"""`graduate adr promote`: each gate item refusing and passing, and the promotion record."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.adr.record import Status
from graduate.check import Verdict
from graduate.evidence import content_hash
from tests.adr.conftest import FLOW, REQUIRED, Project

Setup = Callable[[Project], None]


def _planned(project: Project) -> None:
    project.ok("adr", "new", FLOW)


def _planned_with_run(project: Project) -> None:
    _planned(project)
    project.ok("adr", "attach", "3", project.run())


def _flow_edit(old: str, new: str) -> Setup:
    def setup(project: Project) -> None:
        _planned_with_run(project)
        spike = project.root / "spikes" / f"{FLOW}.toml"
        spike.write_text(spike.read_text().replace(old, new, 1))
    return setup


def _only_junit(project: Project) -> None:
    _planned(project)
    project.ok("adr", "attach", "3", project.junit())


def _spiking_with(*extra: dict[str, object], drop: str | None = None) -> Setup:
    """Spiking on the passing runs (less the fault `drop`) and runs built from `extra`."""
    def setup(project: Project) -> None:
        runs = [project.run(fault=f, versioned=v) for f, v in REQUIRED if f != drop]
        runs += [project.run(**e) for e in extra]  # type: ignore[arg-type]
        project.spiking(*runs)
    return setup


def _approved_then(change: Callable[[Project], None]) -> Setup:
    def setup(project: Project) -> None:
        project.approved()
        change(project)
    return setup


def _ticked_with_junit(failures: int = 0, errors: int = 0, skipped: int = 0,
                       proof: dict[str, object] | None = None,
                       tick: bool = True) -> Callable[[Project], None]:
    """Every item ticked (with `tick`), a JUnit report attached, and runs of the faults
    that prove checklist items, each built with `proof` (None: no such runs)."""
    def change(project: Project) -> None:
        if tick:
            project.tick_all()
        runs = project.proof_runs(**proof) if proof is not None else []
        project.ok("adr", "attach", "3", project.junit(failures=failures, errors=errors,
                                                       skipped=skipped), *runs)
    return change


_SHIPPABLE = _ticked_with_junit(proof={})


def _ticked_but(old: str, new: str) -> Callable[[Project], None]:
    def change(project: Project) -> None:
        _SHIPPABLE(project)
        project.edit_adr(old, new)
    return change


REFUSED = [
    # (id, setup, target, the unmet item's words)
    ("missing class", _flow_edit('approval_class = "A2"', ""), "spiking",
     "approval_class is missing"),
    ("invalid class", _flow_edit('sensitivity_class = "S2"', 'sensitivity_class = "S9"'),
     "spiking", "sensitivity_class = 'S9' is not allowed"),
    ("class changed since the ADR", _flow_edit('approval_class = "A2"',
                                               'approval_class = "A3"'),
     "spiking", "approval_class is A3 in the flow but A2 in the ADR"),
    ("no evidence", _planned, "spiking", "nothing from the evidence store is attached"),
    ("a JUnit report alone", _only_junit, "spiking",
     "nothing from the evidence store is attached"),
    ("a lost instance", _spiking_with({"verdict": Verdict.LOST}), "approved",
     "-01 lost: as built"),
    ("a visibly failed instance", _spiking_with({"fault": "stop-worker",
                                                 "verdict": Verdict.FAILED}),
     "approved", "-01 failed: as built"),
    ("a stuck instance", _spiking_with({"fault": "restart-server", "verdict": Verdict.STUCK}),
     "approved", "-01 stuck: as built"),
    ("an unabsorbed duplicate", _spiking_with({"fault": "stop-worker", "applied": 2}),
     "approved", "activate (effect) applied 2 times, an unabsorbed duplicate"),
    ("a non-exact resume", _spiking_with({"exact": False}), "approved",
     "in flight at activate, resumed at notify, not at the exact step"),
    ("no versioned deploy", _spiking_with({"fault": "deploy-change", "versioned": False},
                                          drop="deploy-change"), "approved",
     "no attached temporal run of a deploy of changed code (deploy-change, versioned)"),
    ("a required fault missing", _spiking_with(drop="restart-server"), "approved",
     "no attached temporal run of restart-server that counts"),
    ("the fault only on another engine",
     _spiking_with({"engine": "celery-state-machine", "fault": "stop-worker"},
                   drop="stop-worker"), "approved",
     "no attached temporal run of stop-worker that counts"),
    ("a fault that never fired", _spiking_with({"fired": False}, drop="kill-worker"),
     "approved", "does not count: the fault never fired"),
    ("a fault that does not apply", _spiking_with({"applicable": False}, drop="kill-worker"),
     "approved", "does not count: the fault does not apply"),
    ("no instance caught in flight", _spiking_with({"hit": False}, drop="kill-worker"),
     "approved", "no instance was caught in flight"),
    ("a ledger row without trace_id", _spiking_with({"fault": "none", "trace_id": ""}),
     "approved", "ledger row 1 (create_record): no trace_id"),
    ("no junit", _approved_then(Project.tick_all), "shipped", "no JUnit report attached"),
    ("a failing junit", _approved_then(_ticked_with_junit(failures=1, proof={})), "shipped",
     "3 test(s), 1 failure(s), 0 error(s), 0 skipped"),
    ("a junit with errors", _approved_then(_ticked_with_junit(errors=2, proof={})),
     "shipped", "3 test(s), 0 failure(s), 2 error(s), 0 skipped"),
    ("a junit that ran nothing", _approved_then(_ticked_with_junit(skipped=3, proof={})),
     "shipped", "3 test(s), 0 failure(s), 0 error(s), 3 skipped"),
    ("a junit with one crash test skipped",
     _approved_then(_ticked_with_junit(skipped=1, proof={})),
     "shipped", "3 test(s), 0 failure(s), 0 error(s), 1 skipped: a skipped test proves "
     "nothing"),
    ("an unticked security item", _approved_then(_ticked_but(
        "- [x] **Network boundaries reviewed**", "- [ ] **Network boundaries reviewed**")),
     "shipped", "not ticked: Network boundaries reviewed"),
    ("an unticked release item", _approved_then(_ticked_but(
        "- [x] **Worker versioning documented**", "- [ ] **Worker versioning documented**")),
     "shipped", "not ticked: Worker versioning documented"),
    ("a rollback rehearsal ticked, with no run of it", _approved_then(_ticked_with_junit()),
     "shipped", "'Rollback rehearsal' is met by evidence only, not by a tick: no attached "
                "temporal run of rollback-rehearsal that passed"),
    ("a double start ticked, with no run of it", _approved_then(_ticked_with_junit()),
     "shipped", "'Runbook: double start' is met by evidence only, not by a tick"),
    ("a double start that failed", _approved_then(_ticked_with_junit(
        proof={"verdict": Verdict.FAILED})), "shipped", "does not count: it failed"),
    ("a rollback rehearsed on another engine", _approved_then(_ticked_with_junit(
        proof={"engine": "celery-state-machine"})), "shipped",
     "no attached temporal run of rollback-rehearsal that passed"),
    ("an added item left unticked", _approved_then(_ticked_but(
        "## Release checklist\n\n", "## Release checklist\n\n- [ ] **Pen test**: done\n")),
     "shipped", "not ticked: Pen test"),
    ("a default item removed", _approved_then(_ticked_but(
        "- [x] **Secrets boundary reviewed**", "- [x] **Secrets**")),
     "shipped", "'Secrets boundary reviewed' was removed"),
    ("the checklist section removed", _approved_then(_ticked_but(
        "## Security gate", "## Security notes")),
     "shipped", "the ADR has no '## Security gate' section"),
]


@pytest.mark.parametrize(("setup", "target", "words"),
                         [pytest.param(s, t, w, id=i) for i, s, t, w in REFUSED])
def test_the_gate_refuses_with_the_unmet_item(project: Project, setup: Setup, target: str,
                                              words: str) -> None:
    setup(project)
    before = project.adr_path().read_text()

    result = project.cli("adr", "promote", "3", "--to", target)

    assert result.code == 1, result.text
    assert f"cannot move to {target}; unmet:" in result.out
    assert words in result.out
    assert project.adr_path().read_text() == before


@pytest.mark.parametrize(("setup", "target"), [
    pytest.param(_planned_with_run, "spiking", id="spiking"),
    pytest.param(_spiking_with(), "approved", id="approved"),
    pytest.param(_approved_then(_SHIPPABLE), "shipped", id="shipped"),
    pytest.param(_approved_then(_ticked_but("- [x] **Rollback rehearsal**",
                                            "- [ ] **Rollback rehearsal**")), "shipped",
                 id="shipped, the rollback rehearsal proven and not ticked"),
])
def test_the_gate_passes_on_sufficient_evidence(project: Project, setup: Setup,
                                                target: str) -> None:
    setup(project)

    result = project.cli("adr", "promote", "3", "--to", target, "--by", "dana")

    assert result.code == 0, result.text
    assert project.adr().record.status == Status(target)


def test_a_failing_run_is_not_outvoted_by_a_passing_one(project: Project) -> None:
    _spiking_with({"fault": "kill-worker", "verdict": Verdict.LOST})(project)

    result = project.cli("adr", "promote", "3", "--to", "approved")

    assert result.code == 1
    assert "kill-worker" in result.out
    assert "lost" in result.out


def test_celery_failures_do_not_block_temporal(project: Project) -> None:
    _spiking_with({"engine": "celery-chain", "verdict": Verdict.LOST},
                  {"engine": "celery-chain", "fault": "deploy-change", "versioned": True,
                   "exact": False})(project)

    project.ok("adr", "promote", "3", "--to", "approved")


@pytest.mark.parametrize(("setup", "target", "words"), [
    pytest.param(_planned_with_run, "approved", "it can move only to spiking next",
                 id="planned to approved"),
    pytest.param(_planned_with_run, "shipped", "it can move only to spiking next",
                 id="planned to shipped"),
    pytest.param(_spiking_with(), "shipped", "it can move only to approved next",
                 id="spiking to shipped"),
    pytest.param(_spiking_with(), "planned", "it can move only to approved next",
                 id="back to planned"),
    pytest.param(_spiking_with(), "spiking", "it can move only to approved next",
                 id="to the same status"),
    pytest.param(_planned, "done", "--to 'done' is not a status", id="unknown status"),
])
def test_skipping_or_going_back_is_refused(project: Project, setup: Setup, target: str,
                                           words: str) -> None:
    setup(project)

    result = project.cli("adr", "promote", "3", "--to", target)

    assert result.code == 2
    assert words in result.err


def test_promotion_records_who_when_and_the_evidence_hashes(project: Project) -> None:
    project.ok("adr", "new", FLOW, "--by", "ann")
    runs = project.passing_runs()
    matrix_id = project.matrix(runs)
    project.ok("adr", "attach", "3", matrix_id)

    project.ok("adr", "promote", "3", "--to", "spiking", "--by", "Ann Smith")
    project.ok("adr", "promote", "3", "--to", "approved", "--by", "Bo")

    record = project.adr().record
    assert record.status is Status.APPROVED
    _, spiking, approved = record.history
    assert (spiking.source, spiking.target, spiking.who) == (Status.PLANNED, Status.SPIKING,
                                                              "Ann Smith")
    assert (approved.source, approved.target, approved.who) == (Status.SPIKING,
                                                                Status.APPROVED, "Bo")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", approved.when)
    expected = [("matrix", matrix_id, content_hash(project.store.matrix_path(matrix_id)))]
    expected += [("run", r, content_hash(project.store.run_path(r))) for r in runs]
    assert [(p.kind, p.id, p.sha256) for p in approved.evidence] == expected
    history = (project.adr().section("Status history") or "").strip().splitlines()
    assert history[1].endswith(f"planned → spiking by Ann Smith; on matrix `{matrix_id}` "
                               f"(sha256 `{expected[0][2][:12]}`, with its 4 run(s)); gate: "
                               "spiking: the classes declared, some evidence attached")
    assert history[2].startswith(f"- {approved.when}: spiking → approved by Bo; on matrix")
    # The policy the approval passed stays on record, whatever the gates become later.
    assert approved.gate == (
        "approved: temporal survived kill-worker, restart-server, stop-worker, a deploy of "
        "changed code (deploy-change, versioned); at least 1 instance(s) per run; profiles "
        "any; trace IDs on every row")
    assert history[2].endswith(f"; gate: {approved.gate}")


def test_promotion_to_shipped_pins_the_junit_report(project: Project) -> None:
    project.approved()
    project.tick_all()
    report = project.junit()
    project.ok("adr", "attach", "3", report, *project.proof_runs())

    project.ok("adr", "promote", "3", "--to", "shipped", "--by", "po")

    shipped = project.adr().record.history[-1]
    assert ("junit", report, content_hash(project.root / report)) in [
        (p.kind, p.id, p.sha256) for p in shipped.evidence]


def test_who_defaults_to_user_then_git(project: Project, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    _planned_with_run(project)
    project.ok("adr", "promote", "3", "--to", "spiking")
    assert project.adr().record.history[-1].who == "ci-user"

    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = Git Person\n")
    monkeypatch.delenv("USER")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    project.ok("adr", "promote", "3", "--to", "rejected", "--reason", "too early")
    assert project.adr().record.history[-1].who == "Git Person"


def test_who_must_be_known(project: Project, monkeypatch: pytest.MonkeyPatch,
                           tmp_path: Path) -> None:
    _planned_with_run(project)
    monkeypatch.delenv("USER")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "none"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")

    result = project.cli("adr", "promote", "3", "--to", "spiking")

    assert result.code == 2
    assert "--by NAME" in result.err


@pytest.mark.parametrize("target", ["rejected", "superseded"])
def test_closing_needs_only_a_reason(project: Project, target: str) -> None:
    _planned(project)

    refused = project.cli("adr", "promote", "3", "--to", target)
    assert refused.code == 2
    assert f"--to {target} needs --reason" in refused.err

    project.ok("adr", "promote", "3", "--to", target, "--reason", "Extend pilot elsewhere")
    record = project.adr().record
    assert record.status == Status(target)
    assert record.history[-1].reason == "Extend pilot elsewhere"
    assert f"planned → {target} by ci-user (Extend pilot elsewhere)" in (
        project.adr().section("Status history") or "")


def test_a_closed_adr_neither_moves_nor_takes_evidence(project: Project) -> None:
    _planned(project)
    project.ok("adr", "promote", "3", "--to", "rejected", "--reason", "no")

    moved = project.cli("adr", "promote", "3", "--to", "spiking")
    attached = project.cli("adr", "attach", "3", project.run())

    assert moved.code == 2
    assert "a closed ADR does not move" in moved.err
    assert attached.code == 2
    assert "a closed ADR takes no more evidence" in attached.err


def test_a_shipped_adr_goes_no_further(project: Project) -> None:
    _approved_then(_SHIPPABLE)(project)
    project.ok("adr", "promote", "3", "--to", "shipped")

    result = project.cli("adr", "promote", "3", "--to", "approved")

    assert result.code == 2
    assert "it is as far as the lifecycle goes" in result.err


def test_edited_evidence_blocks_a_promotion(project: Project) -> None:
    run_id = project.run()
    _planned(project)
    project.ok("adr", "attach", "3", run_id)
    path = project.store.run_path(run_id)
    path.write_text(path.read_text() + " ")

    result = project.cli("adr", "promote", "3", "--to", "spiking")

    assert result.code == 1
    assert f"{run_id}.json changed since it was attached" in result.out
