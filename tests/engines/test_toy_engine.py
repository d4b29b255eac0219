"""Adding an engine is one package plus passing the contract suite: the toy engine
(tests/engines/toy/), registered through the public registry by a pytest plugin, runs
the engine contract tests exactly as the built-in engines do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).parents[2]
CONTRACT = [
    "test_happy_path_applies_each_effect_once_in_order",
    "test_transient_failure_is_retried_to_success",
    "test_permanent_failure_compensates_in_reverse",
    "test_signal_releases_the_wait",
    "test_wait_past_its_deadline_takes_the_timeout_action",
    "test_many_instances_at_once",
]


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
    passed = {case.get("name") for case in cases if not list(case)}
    assert passed == {f"{name}[toy]" for name in CONTRACT}
