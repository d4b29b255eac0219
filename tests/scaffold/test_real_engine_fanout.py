"""The package scaffolded from the dd_room spike on a real Temporal dev server: the
workflow takes the parties from its input and grants them at once, each under its own
step (`grant_access[acme]`) and idempotency key; a red flag after the grants revokes
each granted party once, the last granted first, with its own key; a run without input
grants the spike's default parties."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.flow import load_flow
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.migrate.scaffold import render, scaffold
from tests.scaffold.conftest import ROOT, tool

pytestmark = pytest.mark.slow
APP = "dd_room_temporal"
DD_ROOM = ROOT / "spikes" / "dd_room.toml"
PARTIES = ("acme", "bidco", "counsel")
GRANTS = [f"grant_access[{party}]" for party in PARTIES]


def _effects(ledger_url: str) -> list[EffectRecord]:
    ledger = Ledger(ledger_url)
    [instance] = ledger.instances(ledger.effects()[0].run_id)
    return ledger.effects(instance_id=instance.instance_id)


def test_the_workflow_grants_the_parties_of_its_input_at_once() -> None:
    workflow = render(load_flow(DD_ROOM))["dd_room_temporal/workflow.py"]

    assert 'parties: list[str] = field(default_factory=lambda: ["buyer", "counsel"])' in (
        workflow)
    assert 'await self._parallel(request, [  # grant_access: one branch per item' in workflow
    assert '[_Call(f"grant_access[{item}]", activities.grant_access, GRANT_ACCESS,' in (
        workflow)
    assert "for item in request.parties" in workflow


def test_a_red_flag_after_the_grants_revokes_each_party_once_in_reverse(
        tmp_path: Path) -> None:
    package = tmp_path / "dd-room-temporal"
    scaffold(load_flow(DD_ROOM), package)
    ledger_url = str(tmp_path / "ledger.sqlite3")

    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--timeout", "60",
                            "--input", f"parties={','.join(PARTIES)}",
                            "--signal", "nda_signed=approve",
                            "--signal", "red_flag=interrupt", "--interrupt-at", "diligence"],
                  timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    effects = _effects(ledger_url)
    assert {e.outcome for e in effects} == {Outcome.APPLIED}
    forward = [e for e in effects if e.kind == "effect"]
    undone = [e for e in effects if e.kind == "compensation"]
    grants = [e for e in forward if e.effect == "access.grant"]
    assert sorted(e.step for e in grants) == GRANTS
    assert len({e.idempotency_key for e in grants}) == len(PARTIES)
    assert all(e.idempotency_key.endswith(f":{e.step}") for e in grants)
    [tracker] = [e for e in forward if e.step == "track_requests"]
    assert tracker.started_at >= max(e.finished_at for e in grants)  # the join
    # Every step that landed undone once, the last first; the parties' grants (landed
    # at once, each recorded done as the workflow hears of it) in any order among them.
    order = ["track_requests", "grants", "register_room", "provision_storage"]
    assert [e.step for e in undone if e.step not in GRANTS] == [
        s for s in order if s != "grants"]
    revoked = [e.step for e in undone]
    assert sorted(revoked[1:1 + len(GRANTS)]) == GRANTS
    revokes = [e for e in undone if e.effect == "access.revoke"]
    assert sorted(e.idempotency_key for e in revokes) == sorted(
        f"{e.idempotency_key}.compensation" for e in grants)
    assert "interrupted by red_flag" in result.stdout


def test_without_input_it_grants_the_default_parties(tmp_path: Path) -> None:
    package = tmp_path / "dd-room-temporal"
    scaffold(load_flow(DD_ROOM), package)
    ledger_url = str(tmp_path / "ledger.sqlite3")

    result = tool(package, ["graduate", "--ledger-url", ledger_url, "run", APP,
                            "--engine", "temporal", "--timeout", "60",
                            "--signal", "nda_signed=approve", "--signal", "diligence=approve"],
                  timeout=150)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    grants = [e.step for e in _effects(ledger_url) if e.effect == "access.grant"]
    assert sorted(grants) == ["grant_access[buyer]", "grant_access[counsel]"]
