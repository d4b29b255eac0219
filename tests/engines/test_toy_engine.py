"""Adding an engine is one package plus passing the contract suite: the toy engine
(tests/engines/toy/), registered through the public registry by a pytest plugin, runs
the engine contract tests exactly as the built-in engines do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).parents[2]
# Every case of the engine contract a new engine runs, by its test ID.
CONTRACT = {
    "test_happy_path_applies_each_effect_once_in_order[toy]",
    "test_transient_failure_is_retried_to_success[toy-after a timer]",
    "test_transient_failure_is_retried_to_success[toy-right after the wait]",
    "test_permanent_failure_compensates_in_reverse[toy]",
    "test_signal_releases_the_wait[toy]",
    "test_wait_past_its_deadline_takes_the_timeout_action[toy]",
    "test_many_instances_at_once[toy]",
}


def test_a_toy_engine_package_passes_the_engine_contract(tmp_path: Path) -> None:
    report = tmp_path / "contract.xml"
    # Its own report and evidence folder: the suite's (addopts) belong to the outer run.
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/contract/test_engines.py", "-p",
         "tests.engines.toy.plugin", "-k", "toy", "-n", "0", "-p", "no:cacheprovider",
         f"--junitxml={report}", f"--graduate-evidence={tmp_path / 'evidence'}", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=270, check=False)

    assert finished.returncode == 0, finished.stdout[-4000:] + finished.stderr[-2000:]
    cases = ElementTree.parse(report).getroot().iter("testcase")
    # A passed case has no failure, error or skipped element (its properties it may have).
    passed = {case.get("name") for case in cases
              if not any(child.tag in ("failure", "error", "skipped") for child in case)}
    assert passed == CONTRACT



def _graduate_with(entry_point: str, tmp_path: Path,
                   *args: str) -> subprocess.CompletedProcess[str]:
    """`graduate ARGS` in a fresh process where a package is installed with
    `entry_point` in `graduate.engines` (a bare dist-info on the path)."""
    site = tmp_path / "site"
    info = site / "graduate_toy_engine-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: graduate-toy-engine\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(f"[graduate.engines]\n{entry_point}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "graduate", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_an_installed_engine_package_runs_from_the_command_line(tmp_path: Path) -> None:
    """Installed with an entry point in `graduate.engines`, the package's engine is one
    `graduate run --engine` knows, in a fresh process: nothing else registers it."""
    flow = tmp_path / "approval.toml"
    flow.write_text((ROOT / "tests" / "flows" / "approval.toml").read_text())

    finished = _graduate_with("toy = tests.engines.toy:DESCRIPTIONS", tmp_path, "run",
                              str(flow), "--engine", "toy", "--signal", "approval=approve",
                              "--json")

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    [result] = json.loads(finished.stdout)
    assert [(i["state"], i["effects_applied"]) for i in result["instances"]] == [
        ("completed", 4)]


def test_an_engine_package_that_does_not_load_is_named(tmp_path: Path) -> None:
    finished = _graduate_with("toy = tests.engines.toy:NOTHING", tmp_path, "run",
                              "approval.toml", "--engine", "toy")

    assert finished.returncode == 2
    assert ("entry point 'toy' (tests.engines.toy:NOTHING) in group 'graduate.engines' "
            "failed to load") in finished.stderr
