"""`graduate report` as a user runs it: a real process in a project folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from graduate.reports import FORMATS
from tests.reports.conftest import EvidenceBuilder

GRADUATE = [sys.executable, "-m", "graduate"]


def graduate(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    return subprocess.run([*GRADUATE, *args], cwd=project, capture_output=True, text=True,
                          check=False, timeout=60, env={**env, "COLUMNS": "200"})


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    return tmp_path


def test_report_writes_every_format_and_says_where(project: Path, builder: EvidenceBuilder,
                                                   full_matrix: str) -> None:
    done = graduate(project, "report", "--evidence", str(builder.root), "--out",
                    str(project / "out"))

    assert done.returncode == 0, done.stderr
    for form, suffix in (("html", ".html"), ("md", ".md"), ("junit", ".junit.xml"),
                         ("json", ".json")):
        path = project / "out" / f"report-{full_matrix}{suffix}"
        assert f"{form}: {path}" in done.stdout
        assert path.stat().st_size > 1000
    assert "recommendation: Graduate partner_approval to Temporal." in done.stdout


def test_report_reads_and_writes_the_project_folders(project: Path) -> None:
    builder = EvidenceBuilder(project / ".graduate" / "evidence")
    builder.run("abc123")

    done = graduate(project, "report", "--run", "abc123", "--format", "md,junit")

    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (project / ".graduate" / "reports").iterdir())
    assert written == ["report-runs-abc123.junit.xml", "report-runs-abc123.md"]


@pytest.mark.parametrize("form", FORMATS)
def test_an_empty_store_exits_2_and_says_what_to_do(project: Path, form: str) -> None:
    done = graduate(project, "report", "--format", form)

    assert done.returncode == 2
    assert "is empty; run `graduate matrix FLOW`" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project / ".graduate" / "reports").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["--matrix", "nope"], "no matrix 'nope'"),
    (["--run", "nope"], "no run nope"),
    (["--format", "pdf"], "unknown report format pdf"),
])
def test_unknown_ids_and_formats_exit_2(project: Path, args: list[str], expected: str) -> None:
    EvidenceBuilder(project / ".graduate" / "evidence").run("abc123")

    done = graduate(project, "report", *args)

    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_help_shows_an_example(project: Path) -> None:
    done = graduate(project, "report", "--help")

    assert done.returncode == 0
    assert "Example: graduate report" in done.stdout
    assert "[tool.graduate]" in done.stdout


def test_a_folder_of_runs_of_several_flows_is_reported_one_flow_at_a_time(
        project: Path) -> None:
    """A crash-resume suite's evidence holds runs of every spike: `--flow` picks one."""
    builder = EvidenceBuilder(project / ".graduate" / "evidence")
    builder.run("abc123")
    builder.definition["flow"]["name"] = "signature"
    builder.run("def456")

    mixed = graduate(project, "report", "--format", "md")
    assert mixed.returncode == 2
    assert "different flows (partner_approval, signature)" in mixed.stderr
    assert "--flow NAME" in mixed.stderr

    done = graduate(project, "report", "--flow", "signature", "--format", "md")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (project / ".graduate" / "reports").iterdir()] == [
        "report-signature.md"]

    unknown = graduate(project, "report", "--flow", "dd_room")
    assert unknown.returncode == 2
    assert "no run of the flow 'dd_room'" in unknown.stderr
    assert "partner_approval, signature" in unknown.stderr
    both = graduate(project, "report", "--flow", "signature", "--run", "abc123")
    assert both.returncode == 2
    assert "give one of --matrix, --run or --flow" in both.stderr
