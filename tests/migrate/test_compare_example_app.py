"""`graduate compare` on the partner approval example (examples/partner_approval_app/),
declared with both engines in the repository's pyproject.toml, on real engines: with no
fault the two implementations are equivalent; with the worker killed after a call, and
Celery acknowledging early, the comparison says what each did differently and which
kept the commitment, and the gate exits 1: after the e-signature request, Temporal's
retry is absorbed by the provider's key while Celery loses the rest of its chain; after
the confirmation, which the notification service takes without a key, Temporal's retry
sends it twice while Celery's lost task never records the approval completed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from graduate.cli.app import app

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Celery version's own table, the ledger and the evidence in the test's folder."""
    monkeypatch.setenv("PARTNER_APPROVAL_DB", str(tmp_path / "approvals.sqlite3"))
    return tmp_path


def compare(folder: Path, *options: str) -> tuple[int, str, list[Path]]:
    result = runner.invoke(app, ["--ledger-url", str(folder / "ledger.sqlite3"), "compare",
                                 "partner_approval_app", "--instances", "2",
                                 "--evidence", str(folder / "evidence"),
                                 "--report", str(folder / "report"), *options])
    return (result.exit_code, result.stdout + result.stderr,
            sorted((folder / "report").glob("compare-*")))


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_with_no_fault_both_implementations_do_the_same(folder: Path, decision: str) -> None:
    code, output, reports = compare(folder, "--signal", f"approval={decision}")

    assert code == 0, output
    state = "completed" if decision == "approve" else "compensated"
    assert f"instance 1: Temporal {state}, Celery {state}" in output
    assert f"instance 2: Temporal {state}, Celery {state}" in output
    assert output.rstrip().endswith("equivalent")
    assert [p.suffix for p in reports] == [".html", ".json", ".md"]
    assert "**Equivalent**: 0 unexpected difference(s), 0 allowed." in reports[2].read_text()


def test_a_worker_killed_after_the_envelope_tells_which_kept_the_commitment(
        folder: Path) -> None:
    code, output, reports = compare(folder, "--fault", "kill-worker", "--at",
                                    "send_esign:after-effect", "--profile", "early-ack",
                                    "--timeout", "40")

    assert code == 1, output
    # Temporal retries the activity whose worker died: the provider absorbs the repeated
    # envelope by its key. Celery's early ack lost the task in hand, and the rest of the
    # chain with it.
    assert ("send_esign: Temporal ran esign.send_envelope twice (1 absorbed by its key); "
            "Celery ran esign.send_envelope once.") in output
    assert ("send_confirmation: Temporal ran notify.send_confirmation once; Celery never ran "
            "notify.send_confirmation.") in output
    assert ("Temporal kept the commitment (completed); Celery did not keep the commitment "
            "(stuck:") in output
    assert "not equivalent:" in output
    markdown = reports[2].read_text()
    assert "**Not equivalent**" in markdown
    assert "under kill-worker at send_esign:after-effect" in markdown


def test_a_worker_killed_after_the_unkeyed_confirmation_tells_which_kept_the_commitment(
        folder: Path) -> None:
    code, output, reports = compare(folder, "--fault", "kill-worker", "--at",
                                    "send_confirmation:after-effect", "--profile",
                                    "early-ack", "--timeout", "40")

    assert code == 1, output
    # Temporal retries the activity whose worker died: the notification service, which
    # takes no key, sends the confirmation again. Celery's early ack lost the task in
    # hand after its email went out, before the team's table recorded the approval
    # completed: by its own records it never ends.
    assert ("send_confirmation: Temporal ran notify.send_confirmation twice; Celery ran "
            "notify.send_confirmation once.") in output
    assert ("Temporal did not keep the commitment (completed, but with 1 repeated effect(s) "
            "no key absorbed); Celery did not keep the commitment (stuck:") in output
    assert "not equivalent:" in output
    markdown = reports[2].read_text()
    assert "**Not equivalent**" in markdown
    assert "under kill-worker at send_confirmation:after-effect" in markdown
