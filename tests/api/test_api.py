"""The library API as a program, the CLI and the plugin meet it: the README's example
runs, and the three refuse the same bad input with the same message."""

from __future__ import annotations

import glob
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import graduate
from graduate.services.model import TemporalTarget
from tests.conftest import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    return {**env, "COLUMNS": "200", **extra}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: pyproject with [tool.graduate] and the sample spike."""
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    shutil.copytree(REPO / "spikes", tmp_path / "spikes")
    return tmp_path


def readme_example() -> str:
    """The Python block of the README's "As a library" section, as a reader copies it."""
    section = README.read_text(encoding="utf-8").split("## As a library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's library section has no Python example"
    return match.group(1)


def test_the_readme_example_is_ten_lines_that_use_only_the_package() -> None:
    code = readme_example()

    assert len(code.strip().splitlines()) <= 10
    assert re.findall(r"^(?:from|import) .*$", code, re.MULTILINE) == ["import graduate"]


def test_importing_graduate_loads_the_api_only_when_it_is_used() -> None:
    """Production code imports graduate for `graduate.effect`: that costs no ledger, flow,
    engine or asyncio. `graduate.chaos` stays the function even once the `graduate.chaos`
    package is imported."""
    code = """
import sys
import graduate
print(sorted(m for m in sys.modules if m.startswith("graduate")), "asyncio" in sys.modules)
import graduate.api
import graduate.chaos.harness
print(graduate.chaos is graduate.api.chaos, graduate.run is graduate.api.run)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env=_env())

    assert done.stdout.splitlines() == [
        "['graduate', 'graduate.chaos', 'graduate.errors', 'graduate.instrument'] False",
        "True True"]


@pytest.mark.slow
def test_the_readme_example_runs_on_a_real_temporal(project: Path,
                                                    temporal_server: TemporalTarget) -> None:
    (project / "example.py").write_text(readme_example())

    done = subprocess.run(
        [sys.executable, "example.py"], cwd=project, capture_output=True, text=True,
        timeout=120, check=False,
        env=_env(GRADUATE_TEMPORAL_ADDRESS=temporal_server.address))

    assert done.returncode == 0, done.stdout + done.stderr
    instance, verdict, evidence_line = done.stdout.splitlines()
    assert instance.startswith("partner_approval-")
    assert instance.split()[1] == "completed"
    assert verdict == "passed"
    [evidence] = (project / ".graduate" / "evidence" / "runs").glob("*.json")
    assert evidence_line == f"evidence: {evidence}"
    assert json.loads(evidence.read_text())["fault"]["fired"] is True
    assert processes_mentioning(str(project)) == []


@pytest.mark.parametrize("wait_deadline", [None, 60.0], ids=["flow-wait", "given-wait"])
def test_the_cli_and_the_plugin_refuse_a_wait_that_outlasts_the_run_alike(
        pytester: pytest.Pytester, wait_deadline: float | None) -> None:
    """A wait-timeout run whose wait cannot end before the run's timeout: the flow's own
    wait (a day) or a given one (60 s against 30 s). The plugin used to shorten the first
    silently, and both let the second run to its deadline."""
    project = pytester.path
    (project / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    shutil.copytree(REPO / "spikes", project / "spikes")
    with pytest.raises(graduate.ConfigError) as caught:
        graduate.chaos("partner_approval", engine="temporal", fault="wait-timeout",
                       timeout=30, wait_deadline=wait_deadline,
                       settings=graduate.load_settings(project_dir=project))
    message = str(caught.value)
    assert "--wait-deadline 5 " in message

    flag = [] if wait_deadline is None else ["--wait-deadline", f"{wait_deadline:g}"]
    cli = subprocess.run(
        [sys.executable, "-m", "graduate", "chaos", "partner_approval", "-e", "temporal",
         "--fault", "wait-timeout", "--timeout", "30", *flag],
        cwd=project, capture_output=True, text=True, timeout=60, check=False, env=_env())
    pytester.makepyfile(test_wait=f'''
def test_wait(chaos):
    chaos("partner_approval", engine="temporal", fault="wait-timeout", timeout=30,
          wait_deadline={wait_deadline!r})
''')
    plugin = pytester.runpytest("-p", "no:cacheprovider")

    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert cli.stderr.strip() == f"error: {message}"
    plugin.assert_outcomes(failed=1)
    plugin.stdout.fnmatch_lines([f"E *graduate.errors.ConfigError: {glob.escape(message)}"])
    assert not (project / ".graduate" / "evidence").exists()


@pytest.mark.parametrize(("call", "expected"), [
    ({"decision": "maybe"}, "decision 'maybe' must be approve or reject"),
    ({"payload": ["by", "ana"]}, "the payload must be a JSON object"),
])
def test_signal_refuses_bad_input_before_looking_for_the_instance(
        project: Path, call: dict[str, object], expected: str) -> None:
    with pytest.raises(graduate.ConfigError, match=expected):
        graduate.signal("partner_approval-000000-01", "approval",
                        settings=graduate.load_settings(project_dir=project),
                        **call)  # type: ignore[arg-type]


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_interrupt_sent_with_a_decision_is_refused_not_sent_as_an_interrupt(
        project: Path, decision: str) -> None:
    from graduate.flow import load_flow
    from graduate.ledger import Ledger
    from graduate.runs.session import new_request

    settings = graduate.load_settings(project_dir=project)
    flow = load_flow(project / "spikes" / "dd_room.toml")
    request = new_request(flow, "r1", 1, "acme")
    ledger = Ledger(settings.ledger)
    ledger.register(flow, request, "temporal")
    ledger.close()

    # Refused before any service is looked for: nothing runs, nothing is signalled.
    with pytest.raises(graduate.ConfigError, match=(
            f"red_flag is flow 'dd_room''s interrupt: it takes no decision, and "
            f"--decision {decision} would be ignored")):
        graduate.signal(request.instance_id, "red_flag", decision=decision, settings=settings)
