"""The package scaffolded from the pmi_milestones spike on a real Temporal dev server: a
sign-off left unanswered past its due date escalates exactly once, under the escalation's
own step and key, while the wait stays open until its hard deadline compensates; and the
board's cancellation, sent while a milestone is in flight, lets it finish, starts no
further one, compensates every one that landed in reverse, then sends its notice last."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.flow import INTERRUPT_NOTICE, InstanceRequest, load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.migrate.scaffold import scaffold
from tests.scaffold.conftest import ROOT, tool

pytestmark = pytest.mark.slow
APP = "pmi_milestones_temporal"
SPIKE = (ROOT / "spikes" / "pmi_milestones.toml").read_text(encoding="utf-8")
DAY_ONE = ("merge_accounts", "migrate_plans", "move_documents")
DEADLINE = 8.0  # day one's four weeks, shortened so that the deadline passes in the run
DUE = DEADLINE / 2  # its escalation's two weeks: half-way, as in the spike


def _package(tmp_path: Path, spike: str) -> Path:
    path = tmp_path / "pmi_milestones.toml"
    path.write_text(spike, encoding="utf-8")
    package = tmp_path / "pmi-milestones-temporal"
    scaffold(load_flow(path), package)
    return package


def _effects(ledger_url: str) -> list[EffectRecord]:
    ledger = Ledger(ledger_url)
    [instance] = ledger.instances(ledger.effects()[0].run_id)
    return ledger.effects(instance_id=instance.instance_id)


def test_an_unanswered_sign_off_escalates_once_and_stays_open_until_its_deadline(
        tmp_path: Path) -> None:
    day_one = ('escalation = { after = "2w", effect = "notify.escalate_day_one" }  # due in '
               'two weeks\ndeadline = "4w"')
    assert day_one in SPIKE
    short = SPIKE.replace(day_one, f'escalation = {{ after = "{DUE:g}s", effect = '
                                   f'"notify.escalate_day_one" }}\ndeadline = "{DEADLINE:g}s"')
    package = _package(tmp_path, short)
    flow = load_flow(package / "flows" / "pmi_milestones.toml")
    ledger_url = str(tmp_path / "ledger.sqlite3")

    # No --signal: day one is never signed off.
    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--timeout", "60"], timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    effects = _effects(ledger_url)
    forward = [e for e in effects if e.kind == "effect"]
    undone = [e for e in effects if e.kind == "compensation"]
    assert {(e.step, e.outcome) for e in forward} == {
        (step, Outcome.APPLIED) for step in ("open_plan", *DAY_ONE,
                                             "day_one_review.escalation")}
    [escalation] = [e for e in forward if e.step == "day_one_review.escalation"]
    assert len(forward) == 5, "a milestone or the escalation went twice"
    assert escalation.effect == "notify.escalate_day_one"
    # Due half-way into the wait, sent while it was still open: the deadline, not the
    # escalation, ended it, and only then were the milestones undone.
    joined = max(e.finished_at for e in forward if e.step in DAY_ONE)
    assert escalation.started_at - joined >= DUE
    assert min(e.started_at for e in undone) - joined >= DEADLINE
    assert escalation.finished_at <= min(e.started_at for e in undone)
    assert {e.step for e in undone} == {"open_plan", *DAY_ONE}
    assert undone[-1].step == "open_plan"
    instance = Ledger(ledger_url).instance(escalation.instance_id)
    assert instance is not None
    request = InstanceRequest(instance.instance_id, instance.run_id, instance.tenant_id,
                              instance.entity_id, instance.date, instance.correlation_id,
                              instance.trace_id)
    assert escalation.idempotency_key == flow.key_for("day_one_review.escalation", request)


def _milestones(steps: list[str]) -> list[str]:
    """The steps in order, day one's parallel pieces as one milestone."""
    named = ["day_one" if step in DAY_ONE else step for step in steps]
    return [step for n, step in enumerate(named) if n == 0 or named[n - 1] != step]


def test_the_boards_cancellation_lets_the_milestone_in_flight_finish_then_unwinds_all(
        tmp_path: Path) -> None:
    package = _package(tmp_path, SPIKE)
    ledger_url = str(tmp_path / "ledger.sqlite3")

    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--timeout", "60",
                            "--signal", "day_one_signoff=approve",
                            "--signal", "board_cancellation=interrupt",
                            "--interrupt-at", "cut_over_invoicing"], timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    effects = _effects(ledger_url)
    forward = [e for e in effects if e.kind == "effect"]
    undone = [e for e in effects if e.kind == "compensation"]
    assert {e.outcome for e in effects} == {Outcome.APPLIED}
    # The milestone in flight finished; none after it started (no retirement, no close).
    assert sorted(e.step for e in forward) == sorted(
        ["open_plan", *DAY_ONE, "cut_over_invoicing", INTERRUPT_NOTICE])
    # Every milestone that landed undone once, the last first. Day one's three pieces ran
    # side by side: none of them is the last, and the ledger's clock may order two that
    # ended together otherwise than the workflow saw them end, so they unwind as one.
    landed = sorted((e for e in forward if e.step != INTERRUPT_NOTICE),
                    key=lambda e: e.finished_at)
    assert sorted(e.step for e in undone) == sorted(e.step for e in landed)
    assert _milestones([e.step for e in undone]) == _milestones(
        [e.step for e in reversed(landed)])
    # The notice, once, after the compensations: the instance's last call.
    [notice] = [e for e in forward if e.step == INTERRUPT_NOTICE]
    assert notice.effect == "notify.announce_cancellation"
    assert notice.started_at >= max(e.finished_at for e in undone)
    assert "compensated" in result.stdout
    assert "interrupted by board_cancellation" in result.stdout
