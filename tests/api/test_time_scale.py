"""`--time-scale` reads the same in the CLI, the library and the pytest plugin, and is
checked with the rest of the input, before anything starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import graduate
from graduate.apps import App
from graduate.flow import load_flow
from graduate.runner import RunOptions, validate_options
from graduate.timescale import TimeScale

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")},
            "COLUMNS": "200"}


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graduate", *args], cwd=project,
                          capture_output=True, text=True, timeout=60, check=False,
                          env=_env())


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    (pytester.path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    shutil.copytree(REPO / "spikes", pytester.path / "spikes")
    return pytester.path


def test_a_scale_that_is_not_understood_is_refused_by_every_command(project: Path) -> None:
    for command in (["run", "partner_approval", "-e", "temporal"],
                    ["chaos", "partner_approval", "-e", "temporal", "--fault", "none"],
                    ["matrix", "partner_approval", "--engines", "temporal"]):
        done = _cli(project, *command, "--time-scale", "fast")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "--time-scale 'fast' is not understood" in done.stderr
        assert "1h=1s" in done.stderr
    assert not (project / ".graduate" / "evidence").exists()


def test_the_scaled_wait_is_what_must_end_within_the_run(
        project: Path, pytester: pytest.Pytester) -> None:
    """The sample's 72-hour wait lasts 72 s at 1h=1s: still more than a 30 s run, and the
    refusal says so in the run's seconds; at 1h=100ms it fits (7.2 s), and is accepted."""
    settings = graduate.load_settings(project_dir=project)
    with pytest.raises(graduate.ConfigError) as caught:
        graduate.chaos("partner_approval", engine="temporal", fault="wait-timeout",
                       timeout=30, time_scale="1h=1s", settings=settings)
    message = str(caught.value)
    assert "lasts 72s" in message

    cli = _cli(project, "chaos", "partner_approval", "-e", "temporal", "--fault",
               "wait-timeout", "--timeout", "30", "--time-scale", "1h=1s")
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert cli.stderr.strip() == f"error: {message}"

    pytester.makepyfile(test_wait='''
import graduate
from graduate.apps import App
from graduate.flow import load_flow
from graduate.runner import RunOptions, validate_options
from graduate.timescale import TimeScale
import pytest

def test_wait(chaos):
    with pytest.raises(graduate.ConfigError, match="lasts 72s"):
        chaos("partner_approval", engine="temporal", fault="wait-timeout", timeout=30,
              time_scale="1h=1s")
''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_teams_app_keeps_its_own_durations(project: Path) -> None:
    flow = load_flow(project / "spikes" / "partner_approval.toml")
    app = App(name="shop", flow=flow, engines={"temporal": {}}, project_dir=project,
              where="[tool.graduate.apps.shop]")
    options = RunOptions(flow=str(flow.source), engine="temporal-app", app=app,
                         time_scale=TimeScale.parse("1h=1s"))
    with pytest.raises(graduate.ConfigError, match="a team's app keeps the durations"):
        validate_options(flow, options)
    validate_options(flow, replace(options, time_scale=TimeScale()))
