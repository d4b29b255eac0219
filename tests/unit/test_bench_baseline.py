"""CI's short bench (tests/bench/test_ratios.py) fails when a ratio regresses past its
tolerance, and runs in the plain `pytest` of the README and CI."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from graduate.adapters import plain_modules
from graduate.bench.baseline import load_baseline, regressions
from graduate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASELINE = {"tolerance": 0.25, "throughput_ratio": {"temporal": 0.8, "celery-chain": 0.6}}


def measured(**medians: float) -> dict[str, Any]:
    return {engine.replace("_", "-"): {"throughput_ratio": {
        "median": median, "low": median - 0.1, "high": median + 0.1, "runs": 2}}
        for engine, median in medians.items()}


def test_a_ratio_past_its_tolerance_is_a_regression_that_says_what_fell() -> None:
    # temporal's floor less 25 %: 0.6; celery-chain's: 0.45.
    found = regressions(measured(temporal=0.59, celery_chain=0.45), BASELINE)

    assert found == ["temporal: graduate runs at 0.59x the plain SDK's flows per second "
                     "(from 0.49 to 0.69 over 2 runs), below the baseline 0.80x less 25% "
                     "(0.60x): profile the harness (graduate bench)"]


def test_ratios_within_their_tolerance_pass() -> None:
    assert regressions(measured(temporal=0.61, celery_chain=1.2), BASELINE) == []


def test_an_engine_of_the_baseline_left_unmeasured_is_a_regression() -> None:
    assert regressions(measured(temporal=0.9), BASELINE) == [
        "celery-chain: not measured; the baseline holds a ratio for it"]


def test_the_committed_baseline_loads_and_names_only_engines_with_a_plain_baseline() -> None:
    baseline = load_baseline(REPO / "benchmarks" / "baseline.json")

    assert baseline["throughput_ratio"]
    assert set(baseline["throughput_ratio"]) <= set(plain_modules())


@pytest.mark.parametrize(("baseline", "says"), [
    ({"tolerance": 1.5, "throughput_ratio": {"temporal": 0.6}}, "tolerance"),
    ({"tolerance": 0.3, "throughput_ratio": {}}, "throughput_ratio"),
    ({"tolerance": 0.3, "throughput_ratio": {"temporal": "fast"}}, "throughput_ratio"),
])
def test_a_malformed_baseline_is_refused_saying_what_to_fix(
        tmp_path: Path, baseline: dict[str, Any], says: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))

    with pytest.raises(ConfigError, match=says):
        load_baseline(path)


def test_the_plain_pytest_run_collects_the_short_bench() -> None:
    """The README's and CI's `pytest` takes pyproject's options: its test paths reach
    tests/bench, and nothing there deselects the short bench (it is marked slow, which
    CI always runs)."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"][
        "ini_options"]
    addopts = shlex.split(options.get("addopts", ""))

    assert any((REPO / "tests" / "bench" / "test_ratios.py").is_relative_to(REPO / path)
               for path in options["testpaths"])
    assert not [o for o in addopts if o.split("=")[0] in ("-m", "-k", "--ignore",
                                                          "--deselect", "--ignore-glob")]
    assert "skip" not in (REPO / "tests" / "bench" / "test_ratios.py").read_text()
