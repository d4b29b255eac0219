"""The bench's arithmetic, options and report, without engines (tests/bench runs them)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graduate.bench import BenchOptions, write_bench
from graduate.bench.measure import Spread, sample
from graduate.errors import ConfigError

NODES = (("step", "a"), ("step", "b"), ("wait", "approval"), ("step", "c"))


def test_a_sample_counts_steps_and_waits_apart_from_what_landed() -> None:
    started = {"i1": 100.0, "i2": 100.5}
    landed = {"i1": {"a": 100.2, "b": 100.6, "c": 103.6},
              "i2": {"a": 100.9, "b": 101.3, "c": 102.3}}

    figures = sample(NODES, started, landed)

    # Two flows from the first start (100.0) to the last effect (103.6).
    assert figures.flows_per_second == pytest.approx(2 / 3.6)
    # Steps: 0.2, 0.4 (i1) and 0.4, 0.4 (i2); across the wait: 3.0 and 1.0.
    assert figures.step_p50 == pytest.approx(0.4)
    assert figures.wait_p50 == pytest.approx(2.0)


def test_an_unfinished_instance_is_left_out_of_the_throughput() -> None:
    figures = sample(NODES, {"i1": 0.0, "i2": 0.0},
                     {"i1": {"a": 1.0, "b": 2.0, "c": 4.0}, "i2": {"a": 1.0}})

    assert figures.flows_per_second == pytest.approx(1 / 4.0)


def test_a_spread_is_median_lowest_highest() -> None:
    assert Spread.of([0.9, 0.5, 0.7]) == Spread(0.7, 0.5, 0.9, 3)


@pytest.mark.parametrize(("options", "names"), [
    ({"sections": ("speed",)}, "speed"),
    ({"engines": ("celery-state-machine",)}, "celery-state-machine"),
    ({"scale": (100, 0)}, "scale"),
])
def test_bad_options_say_what_to_fix(options: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        BenchOptions(**options)  # type: ignore[arg-type]


def test_the_report_writes_markdown_json_and_svg_charts(tmp_path: Path) -> None:
    ratio = {"median": 0.8, "low": 0.7, "high": 0.9, "runs": 2}
    run = {"instances": 5, "flows_per_second": 2.0, "step_p50": 0.1, "wait_p50": 0.3}
    results = {
        "created_at": "2026-01-01T00:00:00Z", "flow": "partner_approval",
        "host": {"hostname": "ci", "platform": "Linux", "python": "3.11", "cpus": 2},
        "options": {"instances": 5, "repeats": 2, "scale": [10], "scale_fault": "kill-worker",
                    "matrix_faults": ["kill-worker"], "profiles": ["defaults"],
                    "timeout": 60.0},
        "overhead": {"temporal": {"graduate": [run, run], "plain": [run, run],
                                  "throughput_ratio": ratio, "step_latency_ratio": ratio,
                                  "wait_latency_ratio": None}},
        "scale": [{"engine": "temporal", "instances": 10, "fired": True, "completed": 10,
                   "lost": 0, "stuck": 0, "failed": 0, "duplicates": 0,
                   "time_to_finish": 4.2, "ended": "all finished", "harness_peak_mb": 120.0}],
    }

    written = write_bench(results, tmp_path)

    assert json.loads((tmp_path / "benchmarks.json").read_text()) == results
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "| temporal | 0.80 (0.70\N{EN DASH}0.90) |" in markdown
    assert "| temporal | 10 | yes | 10 | 0 |" in markdown
    charts = sorted(p.name for p in written if p.suffix == ".svg")
    assert charts == ["overhead.svg", "scale-memory.svg", "scale-time.svg"]
    for name in charts:
        root = ET.parse(tmp_path / "benchmarks" / name).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert f"benchmarks/{name}" in markdown
