"""`graduate report --index`: one page over every graduate ADR, written from the ADRs and
the runs attached to them, so it follows what the files say, never what was typed."""

from __future__ import annotations

from graduate.check import Verdict
from tests.adr.conftest import FLOW, Project


def index(project: Project) -> str:
    project.ok("report", "--index", "--out", "reports")
    return (project.root / "reports" / "index.md").read_text(encoding="utf-8")


def test_the_index_reads_each_adrs_status_outcome_and_attached_verdicts(
        project: Project) -> None:
    runs = [*project.passing_runs(),
            project.run(engine="celery-chain", verdict=Verdict.LOST, exact=False),
            *project.passing_runs(engine="celery-state-machine", profile="tuned")]
    project.spiking(*runs)

    text = index(project)

    row = next(line for line in text.splitlines() if line.startswith(f"| {FLOW}"))
    assert "[0003-graduate-partner_approval.md](../docs/adr/0003-graduate-partner_approval.md)" \
        in row
    assert "| spiking (holds) | **not recorded** |" in row
    assert "| defaults 4✅ |" in row  # temporal: the four required faults
    assert "| defaults 0✅ 1❌ |" in row  # the chain lost its instance
    assert row.endswith("| yes |")
    assert "- **celery-chain under defaults**: 0 cell(s) passed, 1 failed: kill-worker at " \
           "activate:before-effect: 1 lost, 1 not resumed at the step in flight." in text
    assert "**Could it stay on Celery?** Yes, as celery-state-machine under tuned (" in text
    assert "it passed all 4 cell(s) it ran." in text


def test_a_celery_strategy_that_ran_fewer_cells_than_the_target_is_not_yet_an_answer(
        project: Project) -> None:
    project.spiking(*project.passing_runs(),
                    project.run(engine="celery-state-machine", profile="tuned"))

    text = index(project)

    assert text.splitlines()[10].endswith("| unknown |")
    assert ("**Could it stay on Celery?** Unknown: celery-state-machine under tuned passed "
            "all 1 cell(s) it ran, but ran 1 of the 4 the target engine ran.") in text


def test_the_index_follows_the_outcome_written_in_the_adr(project: Project) -> None:
    project.spiking()
    assert "**not recorded**" in index(project)

    project.edit_adr("Outcome (to fill): **Approved**, **Rejected** or **Extend pilot**, and "
                     "why, citing the\nevidence below.",
                     "Outcome: **Extend pilot**: the chain loses a commitment.")

    text = index(project)
    assert "| spiking (holds) | **Extend pilot** |" in text
    assert "**not recorded**" not in text


def test_the_index_counts_only_the_runs_of_the_flow_as_it_is_now(project: Project) -> None:
    """An ADR may pin the runs of an earlier definition beside the current ones (its
    history); as for the gates, a run counts only for the definition it ran."""
    earlier = project.run(engine="celery-chain", verdict=Verdict.LOST, exact=False)
    project.edit_spike('timeout = "10s"', 'timeout = "30s"')
    project.spiking(earlier, *project.passing_runs())

    text = index(project)

    row = next(line for line in text.splitlines() if line.startswith(f"| {FLOW}"))
    assert row.endswith("| defaults 4✅ | no run | no run | unknown |")
    assert ("on 4 attached run(s) of the flow as it is now (1 of an earlier definition or "
            "profile left out)") in text
    assert "celery-chain under defaults" not in text


def test_no_celery_strategy_that_passed_everywhere_means_no(project: Project) -> None:
    project.spiking(project.run(),
                    project.run(engine="celery-chain", verdict=Verdict.LOST, exact=False),
                    project.run(engine="celery-state-machine", applied=2))

    text = index(project)

    assert text.splitlines()[10].endswith("| no |")
    assert ("**Could it stay on Celery?** No: every Celery strategy lost, duplicated or "
            "failed a commitment under some fault, even in its best profile: celery-chain "
            "under defaults: kill-worker at activate:before-effect: 1 lost") in text
    assert "celery-state-machine under defaults: kill-worker at activate:before-effect: 1 " \
           "duplicated" in text


def test_an_adr_whose_evidence_changed_is_shown_as_not_holding(project: Project) -> None:
    run = project.run()
    project.spiking(run)
    path = project.store.run_path(run)
    path.write_text(path.read_text(encoding="utf-8") + " ", encoding="utf-8")

    text = index(project)

    assert "| spiking (**does not hold**) |" in text
    assert "changed since it was attached" in text


def test_without_any_graduate_adr_the_index_says_what_to_do(project: Project) -> None:
    result = project.cli("report", "--index", "--out", "reports")

    assert result.code == 2
    assert "`graduate adr new FLOW`" in result.err


def test_the_index_takes_no_evidence_selection(project: Project) -> None:
    project.spiking()

    result = project.cli("report", "--index", "--flow", FLOW)

    assert result.code == 2
    assert "give it without --matrix, --run, --flow or --evidence" in result.err
