"""The command line on a team's own app, as a team runs it from its project folder: the
partner approval example (examples/partner_approval_app/) declared in the project's
pyproject.toml, a human decision sent with `graduate signal` to an instance of the app
that `graduate run` keeps waiting, and `graduate matrix APP` with its report."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from graduate.ledger import Ledger, Outcome
from tests.cli.test_cli import GRADUATE, REPO, _env, graduate
from tests.conftest import processes_mentioning

APP = "partner_approval_app"
REJECTED = [("validate_partner", "effect"), ("create_packet", "effect"),
            ("create_packet", "compensation"), ("approval.rejected_notice", "effect")]
pytestmark = pytest.mark.slow


@pytest.fixture
def app_project(tmp_path: Path) -> Iterator[Path]:
    """A team's project that declares the example as its app (its code on PYTHONPATH)."""
    (tmp_path / "pyproject.toml").write_text(f"""
[tool.graduate]

[tool.graduate.apps.{APP}]
flow = "{REPO / 'examples' / 'partner_approval_app' / 'flow.toml'}"
audit = "examples.partner_approval_app.clients:audit_records"

[tool.graduate.apps.{APP}.temporal]
worker = "examples.partner_approval_app.temporal_app:create_worker"
start = "examples.partner_approval_app.temporal_app:start"

[tool.graduate.apps.{APP}.celery]
app = "examples.partner_approval_app.celery_app:app"
queues = ["partner-approval"]
beat = false
start = "examples.partner_approval_app.celery_app:start"
signal = "examples.partner_approval_app.celery_app:signal"
outcome = "examples.partner_approval_app.celery_app:outcome"
""")
    yield tmp_path
    leftovers = processes_mentioning(str(tmp_path))
    assert not leftovers, f"graduate left processes behind: {leftovers}"


def app_env(project: Path) -> dict[str, str]:
    """The example's code importable, its Celery version's table and its systems' audit
    log in the project."""
    return {"PYTHONPATH": str(REPO), "PARTNER_APPROVAL_DB": str(project / "approvals.sqlite3"),
            "PARTNER_APPROVAL_AUDIT_DB": str(project / "audit.sqlite3")}


def first_instance_at(ledger_path: Path, step: str, run: subprocess.Popen[str]) -> str:
    """The instance whose `step` the ledger records first (the event the test waits on)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        if ledger_path.exists():
            rows = [e for e in Ledger(str(ledger_path)).effects() if e.step == step]
            if rows:
                return rows[0].instance_id
        time.sleep(0.1)
    raise AssertionError(f"{step} never reached the ledger")


@pytest.mark.parametrize("engine", ["temporal", "celery"])
def test_graduate_signal_reaches_a_waiting_instance_of_the_app(app_project: Path,
                                                                engine: str) -> None:
    env = app_env(app_project)
    up = graduate(app_project, "env", "up", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        run = subprocess.Popen([*GRADUATE, "run", APP, "-e", engine, "--timeout", "120"],
                               cwd=app_project, env=_env(env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        ledger_path = app_project / ".graduate" / "ledger.sqlite3"
        instance = first_instance_at(ledger_path, "create_packet", run)

        # On Temporal a signal to the workflow; on Celery the app's declared signal
        # function, which sends its decide task.
        sent = graduate(app_project, "signal", instance, "approval", "--decision", "reject",
                        env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"sent approval=reject to {instance} on {engine}-app" in sent.stdout
        out, err = run.communicate(timeout=150)
        assert run.returncode == 0, out + err
    finally:
        down = graduate(app_project, "env", "down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
    rows = Ledger(str(ledger_path)).effects(instance_id=instance)
    assert [(r.step, r.kind) for r in rows] == REJECTED
    assert {r.outcome for r in rows} == {Outcome.APPLIED}
    assert "compensated" in out


def test_graduate_matrix_runs_the_app_on_its_engines_and_reports_it(app_project: Path) -> None:
    env = app_env(app_project)
    done = graduate(app_project, "matrix", APP, "--faults",
                    "kill-worker@send_confirmation:after-effect", "--profiles", "tuned",
                    "--instances", "2", "--timeout", "90", env=env, timeout=600)

    # Temporal retries the activity whose completion died with its worker, and the
    # notification service, which takes no key, sends the confirmation twice; Celery (late
    # ack, 10 s visibility timeout) redelivers the task, with the same duplicate: neither
    # cell passes (the matrix summarises; its cells carry the verdicts).
    assert done.returncode == 0, done.stdout + done.stderr
    [matrix_file] = (app_project / ".graduate" / "evidence" / "matrices").glob("*.json")
    matrix = json.loads(matrix_file.read_text(encoding="utf-8"))
    cells = {(c["engine"], c["fault"]): c for c in matrix["cells"]}
    assert set(cells) == {("temporal-app", "kill-worker"), ("celery-app", "kill-worker")}
    for cell in cells.values():
        assert cell["status"] == "done"
        summary = cell["summary"]
        assert (summary["completed"], summary["passed"]) == (2, False), summary
        assert summary["hit_by_fault"] >= 1
        assert summary["unabsorbed_duplicates"] >= 1

    report = graduate(app_project, "report", "--format", "md,json", "--out", "out", env=env)
    assert report.returncode == 0, report.stdout + report.stderr
    [report_file] = (app_project / "out").glob("*.md")
    markdown = report_file.read_text(encoding="utf-8")
    for engine in ("temporal-app", "celery-app"):
        assert engine in markdown
    assert "send_confirmation" in markdown
