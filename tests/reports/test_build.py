"""The report model, built from stored evidence: what each cell, engine and instance shows,
and what the report recommends."""

from __future__ import annotations

import copy
import os
from dataclasses import asdict

import pytest

from graduate.check import (
    CorrelationBreak,
    EffectVerdict,
    InstanceVerdict,
    Resume,
    Verdict,
    judge_run,
)
from graduate.errors import GraduateError
from graduate.reports import build_report
from graduate.reports.model import CellReport, Report
from graduate.runs.record import RunRecord
from tests.reports.conftest import (
    BASE,
    BEFORE,
    COMPENSATED,
    FAULT_AT,
    LOST,
    CellSpec,
    EvidenceBuilder,
    Instance,
    matrix_cells,
)


def report_verdicts(builder: EvidenceBuilder, run_id: str) -> list[InstanceVerdict]:
    """The checker's verdicts of a stored run, read back."""
    return [InstanceVerdict(**{**i, "verdict": Verdict(i["verdict"]), "effects": tuple(
        EffectVerdict(**e) for e in i["effects"]), "resume": Resume(
            **{**i["resume"], "reran": tuple(i["resume"]["reran"])}) if i["resume"] else None})
            for i in ({k: v for k, v in i.items() if k != "history"}
                      for i in builder.records[run_id]["instances"])]


def cell(report: Report, engine: str, fault: str) -> CellReport:
    return next(c for c in report.cells if c.engine == engine and c.fault == fault)


def test_a_full_matrix_shows_every_cell_with_its_verdict(builder: EvidenceBuilder,
                                                         full_matrix: str) -> None:
    report = build_report(builder.store)

    assert report.matrix_id == full_matrix
    assert len(report.cells) == 15
    assert cell(report, "temporal", "kill-worker").status == "pass"
    assert cell(report, "temporal", "kill-pool-child").status == "not-applicable"
    assert "no pool child" in cell(report, "temporal", "kill-pool-child").reason
    lost = cell(report, "celery-chain", "kill-worker")
    assert (lost.status, lost.lost, lost.hit_by_fault, lost.resumed_exactly) == ("fail", 1, 1, 0)
    duplicated = cell(report, "celery-chain", "stop-worker")
    assert (duplicated.status, duplicated.unabsorbed_duplicates) == ("fail", 1)
    assert cell(report, "celery-state-machine", "wait-timeout").compensated == 1


def test_engine_summaries_say_which_engine_held(builder: EvidenceBuilder,
                                                full_matrix: str) -> None:
    summaries = {s.engine: s for s in build_report(builder.store).summaries}

    assert summaries["temporal"].verdict == "pass"
    assert summaries["temporal"].cells_not_applicable == 1
    assert summaries["celery-chain"].verdict == "fail"
    assert (summaries["celery-chain"].lost, summaries["celery-chain"].unabsorbed_duplicates) == (
        1, 1)
    assert "1 commitment(s) lost" in summaries["celery-chain"].sentence
    assert summaries["celery-state-machine"].verdict == "pass"
    assert summaries["temporal"].median_time_to_resume == pytest.approx(10.0)


def test_every_problem_names_its_instance_and_ids(builder: EvidenceBuilder,
                                                  full_matrix: str) -> None:
    problems = build_report(builder.store).problems

    kinds = sorted(p.kind for p in problems)
    assert kinds == ["duplicate", "failed", "lost", "resume", "resume"]
    duplicate = next(p for p in problems if p.kind == "duplicate")
    assert duplicate.step == "activate"
    assert duplicate.correlation_id == "corr-r13-1"
    assert duplicate.trace_id == "tracer1301"
    assert "applied 2 times" in duplicate.detail
    assert "demo-tenant:partner_approval:r13:activate" in duplicate.detail


def test_the_report_judges_like_the_checker(builder: EvidenceBuilder,
                                            full_matrix: str) -> None:
    report = build_report(builder.store)

    for item in report.cells:
        if item.status in ("pass", "fail"):
            stored = builder.records[str(item.run_id)]["verdict"]
            assert (item.status == "pass") == stored["passed"], item.key
            assert bool(item.problems) == (item.status == "fail"), item.key
            assert list(item.failures) == stored["failures"], item.key


def test_ledger_times_line_up_with_the_timeline(builder: EvidenceBuilder,
                                                full_matrix: str) -> None:
    run = next(r for r in build_report(builder.store).runs if r.run_id == "r01")

    assert run.clock == "exact"
    rows = run.instances[0].rows
    assert [round(r.start, 3) for r in rows] == [0.55, 0.6, 10.7, 10.75]
    resume = run.instances[0].resume
    assert resume is not None
    assert resume.resumed_time == pytest.approx(10.7)
    assert resume.time_to_resume == pytest.approx(10.7 - FAULT_AT)


def test_a_run_without_resume_is_placed_approximately(builder: EvidenceBuilder) -> None:
    builder.run("calm", fault="none", at=None)

    run = build_report(builder.store, run_ids=["calm"]).runs[0]

    assert run.clock == "approximate"
    assert run.instances[0].rows[0].start >= 0


def test_the_long_lived_flow_that_celery_loses_graduates(builder: EvidenceBuilder,
                                                         full_matrix: str) -> None:
    report = build_report(builder.store)

    assert {c.signal: c.points_to for c in report.criteria} == {
        "Duration": "temporal", "State": "temporal", "Compensation": "temporal",
        "Failure domain": "temporal"}
    duration = report.criteria[0]
    assert "72 h" in duration.flow_needs
    assert report.recommendation.decision == "graduate"
    reasons = " ".join(report.recommendation.reasons)
    assert "celery-chain" in reasons
    assert "celery-state-machine also passed every cell" in reasons


def test_a_short_flow_that_celery_keeps_stays(builder: EvidenceBuilder) -> None:
    builder.definition = {
        "flow": {**BASE["flow"]["definition"]["flow"], "name": "lead_score",
                 "reversibility_class": "R0"},
        "systems": {"crm": {"honours_idempotency": True}}, "compensations": {},
        "nodes": [{"step": "score", "effect": "crm.score", "timeout": 10.0,
                   "retry": BASE["flow"]["definition"]["nodes"][0]["retry"]}],
    }
    rows = (("score", "effect", "applied", 2, 3.0),)
    for engine, run_id in (("temporal", "t1"), ("celery-state-machine", "s1")):
        builder.run(run_id, engine=engine, fault="kill-worker", at="score:before-effect",
                    instances=(Instance(rows=rows),))

    report = build_report(builder.store, run_ids=["t1", "s1"])

    assert {c.points_to for c in report.criteria} == {"celery"}
    assert report.recommendation.decision == "keep-celery"
    assert "celery-state-machine" in report.recommendation.headline


def test_without_a_temporal_run_there_is_not_enough_evidence(builder: EvidenceBuilder) -> None:
    builder.run("c1", engine="celery-chain", instances=(LOST,))

    report = build_report(builder.store, run_ids=["c1"])

    assert report.recommendation.decision == "not-enough-evidence"
    assert "No Temporal run" in report.recommendation.reasons[0]


def test_a_partial_matrix_shows_pending_cells_and_says_so(builder: EvidenceBuilder,
                                                          partial_matrix: str) -> None:
    report = build_report(builder.store, matrix_id=partial_matrix)

    pending = [c for c in report.cells if c.status == "pending"]
    assert len(pending) == 5
    assert all(c.engine == "celery-state-machine" and c.reason == "not run" for c in pending)
    summary = next(s for s in report.summaries if s.engine == "celery-state-machine")
    assert (summary.verdict, summary.cells_pending) == ("no evidence", 5)
    assert "5 cell(s) have not run yet" in report.recommendation.reasons[-1]


def test_an_interrupted_matrix_reports_what_it_has(builder: EvidenceBuilder,
                                                   interrupted_matrix: str) -> None:
    report = build_report(builder.store, matrix_id=interrupted_matrix)

    assert "orphan" not in [r.run_id for r in report.runs]
    assert report.pending == 5
    missing = cell(report, "celery-chain", "kill-worker")
    assert (missing.status, missing.lost, missing.evidence_missing) == ("fail", 1, True)
    assert missing.failures
    assert len(report.warnings) == 1
    assert "is missing" in report.warnings[0]
    assert "Restore the file" in report.warnings[0]


def test_the_latest_matrix_is_the_default(builder: EvidenceBuilder, full_matrix: str) -> None:
    cells = matrix_cells(builder, prefix="n")
    newer = builder.matrix("mnewer", cells)
    older = builder.store.matrix_path(full_matrix)
    os.utime(older, (1_700_000_000, 1_700_000_000))

    assert build_report(builder.store).matrix_id == newer


def test_a_changed_checker_rule_is_applied_and_said(builder: EvidenceBuilder) -> None:
    record = builder.run("old", engine="celery-chain", fault="restart-broker",
                         instances=(Instance("failed", rows=(
                             *BEFORE, ("activate", "effect", "applied", 1, 0.75))),))
    # Written by a graduate whose checker let a visibly failed commitment pass.
    stored = copy.deepcopy(record)
    stored["verdict"]["passed"] = True
    stored["verdict"]["failures"] = []
    builder.store.save_run(RunRecord.from_dict(stored))

    report = build_report(builder.store, run_ids=["old"])

    assert report.cells[0].status == "fail"
    assert "was judged pass when it ran" in report.warnings[0]


def test_a_compensated_instance_counts_its_undo_calls(builder: EvidenceBuilder) -> None:
    builder.run("w1", fault="wait-timeout", at="approval:during-wait",
                instances=(COMPENSATED,))

    report = build_report(builder.store, run_ids=["w1"])

    instance = report.runs[0].instances[0]
    assert [(e.step, e.kind) for e in instance.effects if e.kind == "compensation"] == [
        ("request_approval", "compensation"), ("create_record", "compensation")]
    assert report.cells[0].label == "wait-timeout@approval:during-wait[defaults]"


def test_an_empty_store_says_what_to_do(builder: EvidenceBuilder) -> None:
    with pytest.raises(GraduateError) as caught:
        build_report(builder.store)

    assert "is empty; run `graduate matrix FLOW`" in str(caught.value)


def test_a_store_of_runs_without_a_matrix_reports_every_run(builder: EvidenceBuilder) -> None:
    builder.run("first")
    builder.run("second")

    report = build_report(builder.store)

    assert sorted(run.run_id for run in report.runs) == ["first", "second"]


def test_unknown_ids_are_refused_with_the_known_ones(builder: EvidenceBuilder,
                                                     full_matrix: str) -> None:
    with pytest.raises(GraduateError) as matrix_error:
        build_report(builder.store, matrix_id="nope")
    with pytest.raises(GraduateError) as run_error:
        build_report(builder.store, run_ids=["r00", "nope"])
    with pytest.raises(GraduateError) as both:
        build_report(builder.store, matrix_id=full_matrix, run_ids=["r00"])

    assert f"matrices there: {full_matrix}" in str(matrix_error.value)
    assert "no run nope" in str(run_error.value)
    assert "runs there: r00, r01" in str(run_error.value)
    assert "and 5 more" in str(run_error.value)
    assert "give one of --matrix, --run or --flow" in str(both.value)


def test_runs_of_different_flows_are_refused(builder: EvidenceBuilder) -> None:
    builder.run("a1")
    builder.definition = copy.deepcopy(builder.definition)
    builder.definition["flow"]["name"] = "other_flow"
    builder.run("b1")

    with pytest.raises(GraduateError, match="different flows"):
        build_report(builder.store, run_ids=["a1", "b1"])


def test_verdicts_agree_with_judge_run_for_any_instance_mix(builder: EvidenceBuilder) -> None:
    builder.run("mix", engine="celery-chain",
                instances=(Instance(), LOST, Instance("stuck", BEFORE), COMPENSATED))

    report = build_report(builder.store, run_ids=["mix"])

    stored = builder.records["mix"]["verdict"]
    assert report.cells[0].failures == tuple(stored["failures"])
    assert len(report.problems) == len(judge_run(report_verdicts(builder, "mix")).failures)
    assert sorted(p.kind for p in report.problems) == [
        "lost", "resume", "resume", "resume", "stuck"]


def test_a_matrix_that_has_not_run_yet_knows_only_its_cells(builder: EvidenceBuilder,
                                                           fresh_matrix: str) -> None:
    report = build_report(builder.store)

    assert report.flow.name == "partner_approval"
    assert not report.flow.known
    assert {c.points_to for c in report.criteria} == {"open"}
    assert report.recommendation.decision == "not-enough-evidence"
    assert report.pending == 15


def test_the_flow_is_shown_as_written_not_as_shortened(builder: EvidenceBuilder) -> None:
    shortened = builder.run("short", fault="wait-timeout", at="approval:during-wait",
                            instances=(COMPENSATED,))
    shortened["options"]["wait_deadline"] = 5.0
    next(n for n in shortened["flow"]["definition"]["nodes"] if "wait" in n)["deadline"] = 5.0
    builder.store.save_run(RunRecord.from_dict(shortened))
    builder.run("plain", fault="none", at=None)

    report = build_report(builder.store, run_ids=["short", "plain"])

    assert report.flow.waits[0].deadline == 72 * 3600


@pytest.mark.parametrize("guarded_passes", [True, False])
def test_temporal_refusing_an_unguarded_deploy_counts_only_if_the_guard_works(
        builder: EvidenceBuilder, guarded_passes: bool) -> None:
    """Replay holding an instance after a deploy without the versioning guard is the
    safe outcome when the same deploy with the guard passes; without that, Temporal
    itself failed."""
    cells = matrix_cells(builder)
    at = "approval:during-wait"
    builder.run("dv", engine="temporal", fault="deploy-change", at=at,
                instances=(Instance("stuck", BEFORE),))
    builder.run("dg", engine="temporal", fault="deploy-change", at=at, versioned=True,
                instances=(Instance() if guarded_passes else Instance("stuck", BEFORE),))
    cells += [CellSpec("temporal", "deploy-change", at, run_id="dv"),
              CellSpec("temporal", "deploy-change+versioned", at, run_id="dg")]

    report = build_report(builder.store, matrix_id=builder.matrix("mdeploy", cells))

    reasons = " ".join(report.recommendation.reasons)
    if guarded_passes:
        assert report.recommendation.decision == "graduate"
        assert "replay caught as intended" in reasons
    else:
        assert report.recommendation.decision == "not-enough-evidence"
        assert "Temporal itself failed" in reasons


def test_an_effect_that_lost_its_correlation_fails_the_run_and_the_report_names_it(
        builder: EvidenceBuilder) -> None:
    record = builder.run("relay", save=False)
    instance = record["instances"][0]
    lost = CorrelationBreak(effect_id=3, step="activate", attempt=2,
                            instance_id=instance["instance_id"], field="correlation_id",
                            expected=instance["correlation_id"], found="")
    instance["correlation_breaks"] = [asdict(lost)]
    builder.store.save_run(RunRecord.from_dict(record))

    report = build_report(builder.store)
    verdict = judge_run(builder.store.load_run("relay").verdicts)

    assert not verdict.passed
    assert verdict.correlation_breaks == 1
    assert "activate attempt 2 has correlation_id none" in verdict.failures[0]
    [problem] = report.problems
    assert problem.kind == "correlation"
    assert problem.step == "activate"
    assert problem.instance_id == instance["instance_id"]
    assert not report.runs[0].passed
