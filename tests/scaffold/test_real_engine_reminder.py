"""The package scaffolded from the signature spike on a real Temporal dev server: a wait
left unanswered past half its deadline sends its reminder exactly once, under the
reminder's own step and key, while the wait is open; then the deadline compensates."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import judge_reminders
from graduate.flow import InstanceRequest, load_flow
from graduate.ledger import Ledger, Outcome
from graduate.migrate.scaffold import scaffold
from tests.scaffold.conftest import ROOT, tool

pytestmark = pytest.mark.slow
APP = "signature_temporal"
DEADLINE = 6.0  # the spike's five days, shortened so that the deadline passes in the run
REMINDER_AT = DEADLINE / 2


def test_an_unanswered_wait_sends_its_reminder_once_then_its_deadline_compensates(
        tmp_path: Path) -> None:
    spike = (ROOT / "spikes" / "signature.toml").read_text(encoding="utf-8")
    assert 'deadline = "5d"' in spike
    short = tmp_path / "signature.toml"
    short.write_text(spike.replace('deadline = "5d"', f'deadline = "{DEADLINE:g}s"'),
                     encoding="utf-8")
    flow = load_flow(short)
    package = tmp_path / "signature-temporal"
    scaffold(flow, package)
    ledger_url = str(tmp_path / "ledger.sqlite3")

    # No --signal: the signed webhook never comes.
    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--timeout", "60"], timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    ledger = Ledger(ledger_url)
    [instance] = ledger.instances(ledger.effects()[0].run_id)
    effects = ledger.effects(instance_id=instance.instance_id)
    assert [(e.step, e.effect, e.kind, e.outcome) for e in effects] == [
        ("send_envelope", "esign.send_envelope", "effect", Outcome.APPLIED),
        ("signed.reminder", "esign.remind_signer", "effect", Outcome.APPLIED),
        ("send_envelope", "esign.void_envelope", "compensation", Outcome.APPLIED)]
    sent, reminder, voided = effects
    # Due half-way, sent while the wait was still open, before the deadline's undo.
    assert reminder.started_at - sent.finished_at >= REMINDER_AT
    assert reminder.finished_at <= voided.started_at
    request = InstanceRequest(instance.instance_id, instance.run_id, instance.tenant_id,
                              instance.entity_id, instance.date, instance.correlation_id,
                              instance.trace_id)
    assert reminder.idempotency_key == flow.key_for("signed.reminder", request)
    # The checker finds the reminder owed and sent once.
    [verdict] = judge_reminders(flow, instance, effects,
                                InstanceStatus(InstanceState.COMPENSATED,
                                               finished_at=voided.finished_at))
    assert (verdict.due, verdict.applied, verdict.missing) == (True, 1, False)
