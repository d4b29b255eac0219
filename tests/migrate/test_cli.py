"""`graduate inventory` on the command line: each format, --fail-on, --flow, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graduate.cli.app import app
from graduate.flow import load_flow
from tests.migrate.conftest import ACME

runner = CliRunner()


def test_table_ranks_flows_and_lists_hazards() -> None:
    result = runner.invoke(app, ["inventory", str(ACME)])
    assert result.exit_code == 0, result.output
    assert "create_crm_draft" in result.stdout
    assert "eta-beyond-visibility-timeout" in result.stdout
    assert "skipped legacy/broken.py:6: syntax error" in result.stderr


def test_many_skipped_places_are_summed_up_on_stderr_and_listed_in_md(tmp_path: Path) -> None:
    for number in range(5):
        (tmp_path / f"broken_{number}.py").write_text("def f(:\n")
    result = runner.invoke(app, ["inventory", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == [
        "skipped broken_0.py", "skipped broken_1.py", "skipped broken_2.py",
        "skipped 2 more places (5 in all)"]
    markdown = runner.invoke(app, ["inventory", str(tmp_path), "--format", "md"])
    assert all(f"`broken_{number}.py:1`" in markdown.stdout for number in range(5))


@pytest.mark.parametrize("output_format", ["md", "json", "sarif"])
def test_each_format_to_stdout_and_to_a_file(output_format: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["inventory", str(ACME), "--format", output_format])
    assert result.exit_code == 0, result.output
    out = tmp_path / f"inventory.{output_format}"
    written = runner.invoke(app, ["inventory", str(ACME), "--format", output_format,
                                  "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert out.read_text() == result.stdout
    if output_format == "md":
        assert result.stdout.startswith("# Celery inventory of ")
    elif output_format == "json":
        assert json.loads(result.stdout)["flows"][0]["name"] == "create_crm_draft"
    else:
        assert json.loads(result.stdout)["version"] == "2.1.0"


def test_fail_on_exits_1_with_the_reasons() -> None:
    failed = runner.invoke(app, ["inventory", str(ACME), "--format", "json",
                                 "--fail-on", "high"])
    assert failed.exit_code == 1
    assert "high hazard reject-on-worker-lost-loop at billing/tasks.py:8" in failed.stderr
    graduate = runner.invoke(app, ["inventory", str(ACME), "--fail-on", "graduate"])
    assert graduate.exit_code == 1
    assert "flow schedule_renewal: graduate" in graduate.stderr


def test_fail_on_passes_a_codebase_with_nothing_to_flag(celery_examples: Path) -> None:
    passed = runner.invoke(app, ["inventory", str(celery_examples), "--format", "json",
                                 "--fail-on", "low", "--fail-on", "spike"])
    assert passed.exit_code == 0, passed.output


def test_flow_writes_a_file_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "spikes" / "renewal.toml"
    result = runner.invoke(app, ["inventory", str(ACME), "--flow", "schedule_renewal",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"next: graduate matrix {out}" in result.stderr
    flow = load_flow(out)
    assert [n.name for n in flow.nodes] == ["schedule_renewal", "before_charge_invoice",
                                            "charge_invoice", "before_send_receipt",
                                            "send_receipt"]
    printed = runner.invoke(app, ["inventory", str(ACME), "--flow", "schedule_renewal"])
    assert printed.stdout.strip() == out.read_text().strip()


def test_bad_input_exits_2_with_what_to_fix(tmp_path: Path) -> None:
    unknown = runner.invoke(app, ["inventory", str(ACME), "--flow", "nope"])
    assert unknown.exit_code == 2
    assert "flows found: create_crm_draft, schedule_renewal" in unknown.stderr
    threshold = runner.invoke(app, ["inventory", str(ACME), "--fail-on", "severe"])
    assert threshold.exit_code == 2
    assert "--fail-on 'severe' is not known" in threshold.stderr
    folder = runner.invoke(app, ["inventory", str(ACME), "--format", "json",
                                 "--out", str(tmp_path)])
    assert folder.exit_code == 2
    assert f"--out {tmp_path} cannot be written" in folder.stderr


def test_a_missing_path_exits_2_with_a_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", "graduate", "inventory", str(missing)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert f"{missing} does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_fail_on_applies_when_writing_a_flow_too(tmp_path: Path) -> None:
    out = tmp_path / "approval.toml"
    result = runner.invoke(app, ["inventory", str(ACME), "--flow", "create_crm_draft",
                                 "--out", str(out), "--fail-on", "graduate"])
    assert result.exit_code == 1
    assert load_flow(out).name == "create_crm_draft"
