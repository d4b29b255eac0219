"""The bench's arithmetic, options and report, without engines (tests/bench runs them)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graduate.bench import BenchOptions, write_bench
from graduate.bench.measure import Spread, sample
from graduate.bench.scale import generated_flow
from graduate.bench.suite import matrix_split
from graduate.chaos.matrix import default_point
from graduate.errors import ConfigError
from graduate.flow import load_flow

NODES = (("step", "a"), ("step", "b"), ("wait", "approval"), ("step", "c"))


def test_a_sample_counts_steps_and_waits_apart_from_what_landed() -> None:
    started = {"i1": 100.0, "i2": 100.5}
    landed = {"i1": {"a": 100.2, "b": 100.6, "c": 103.6},
              "i2": {"a": 100.9, "b": 101.3, "c": 102.3}}

    figures = sample(NODES, started, landed)

    # Two flows from the first start (100.0) to the last effect (103.6).
    assert figures.flows_per_second == pytest.approx(2 / 3.6)
    # Steps: 0.4 (i1) and 0.4 (i2), each from the step before (a start is no step);
    # across the wait: 3.0 and 1.0.
    assert figures.step_p50 == pytest.approx(0.4)
    assert figures.wait_p50 == pytest.approx(2.0)


def test_a_step_latency_does_not_depend_on_how_the_instances_were_started() -> None:
    # The same steps, 0.3 s apart and 1.0 s across the wait, after two ways of starting:
    # registered together then started as a batch (the harness: the second instance's
    # first step queued 2.0 s behind the first), and one start at a time (the plain
    # driver: each first step 0.1 s after its own start).
    def landed(first: float) -> dict[str, float]:
        return {"a": first, "b": first + 0.3, "c": first + 1.3}

    batch = sample(NODES, {"i1": 0.0, "i2": 0.0}, {"i1": landed(1.0), "i2": landed(2.0)})
    one_by_one = sample(NODES, {"i1": 0.0, "i2": 0.9}, {"i1": landed(0.1),
                                                       "i2": landed(1.0)})

    assert batch.step_p50 == pytest.approx(0.3)
    assert one_by_one.step_p50 == pytest.approx(0.3)
    assert batch.wait_p50 == one_by_one.wait_p50 == pytest.approx(1.0)


def test_an_unfinished_instance_is_left_out_of_the_throughput() -> None:
    figures = sample(NODES, {"i1": 0.0, "i2": 0.0},
                     {"i1": {"a": 1.0, "b": 2.0, "c": 4.0}, "i2": {"a": 1.0}})

    assert figures.flows_per_second == pytest.approx(1 / 4.0)


def test_a_spread_is_median_lowest_highest() -> None:
    assert Spread.of([0.9, 0.5, 0.7]) == Spread(0.7, 0.5, 0.9, 3)


@pytest.mark.parametrize(("options", "names"), [
    ({"sections": ("speed",)}, "speed"),
    ({"engines": ("celery-app",)}, "celery-app"),
    ({"scale": (100, 0)}, "scale"),
    ({"scale_steps": (4, 2)}, "--scale-steps"),
])
def test_bad_options_say_what_to_fix(options: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        BenchOptions(**options)  # type: ignore[arg-type]


def matrix_of(fault: str, time_to_resume: float | None, *, ended: str) -> dict[str, object]:
    cell = {"engine": "temporal", "fault": fault, "profile": "defaults", "run_id": "r1",
            "status": "done", "wall": 10.0, "time_to_resume": time_to_resume,
            "recovery": 6.0, "deadline_wait": 1.0, "harness": 3.0, "ended": ended}
    return {"matrix_id": "m1", "wall": 10.0, "cells": [cell], "faults": [fault],
            "profiles": ["defaults"], "instances": 3, "timeout": 45.0, "recovery": 6.0,
            "deadline_wait": 1.0, "harness": 3.0}


def scale_row(instances: int, steps: int, time_to_finish: float) -> dict[str, object]:
    return {"engine": "temporal", "instances": instances, "steps": steps, "run_id": "r1",
            "applicable": True, "reason": "", "fired": True, "completed": instances,
            "lost": 0, "stuck": 0, "failed": 0, "duplicates": 0, "absorbed_duplicates": 1,
            "time_to_finish": time_to_finish, "ended": "all finished",
            "harness_peak_mb": 120.0, "load": 3.0}


def test_the_report_writes_markdown_json_and_svg_charts(tmp_path: Path) -> None:
    ratio = {"median": 0.8, "low": 0.7, "high": 0.9, "runs": 2}
    run = {"instances": 5, "flows_per_second": 2.0, "step_p50": 0.1, "wait_p50": 0.3}
    results = {
        "created_at": "2026-01-01T00:00:00Z", "flow": "partner_approval",
        "host": {"hostname": "ci", "platform": "Linux", "python": "3.11", "cpus": 2},
        "options": {"instances": 5, "repeats": 2, "scale": [10, 100], "scale_steps": [4, 6],
                    "scale_fault": "kill-worker+restart", "scale_timeout": 60.0,
                    "scale_per_instance": 1.0},
        "overhead": {"temporal": {"graduate": [run, run], "plain": [run, run],
                                  "throughput_ratio": ratio, "step_latency_ratio": ratio,
                                  "wait_latency_ratio": None}},
        "matrix": {"demo": matrix_of("none", None, ended="all finished"),
                   "sla": matrix_of("kill-worker", 3.25, ended="ended early: nothing holds")},
        "scale": [scale_row(10, 4, 4.2), scale_row(100, 4, 30.5), scale_row(10, 6, 5.0),
                  {"engine": "temporal", "instances": 1000, "steps": 4,
                   "error": "MemoryError: "}],
    }

    written = write_bench(results, tmp_path)

    assert json.loads((tmp_path / "benchmarks.json").read_text()) == results
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "| temporal | 0.80 (0.70\N{EN DASH}0.90) |" in markdown
    assert "| temporal | 10 | 4 | yes | 10 | 0 | 0 | 0 | 0 (1) | 4.2 s |" in markdown
    assert "| temporal | 1000 | 4 | did not finish: MemoryError: |" in markdown
    assert ("Engine recovery 6.0 s (60 %), waiting for a deadline 1.0 s (10 %), harness "
            "3.0 s (30 %)") in markdown
    assert ("| temporal | kill-worker | defaults | 3.25 s | 10.0 s | 6.0 s | 1.0 s | 3.0 s | "
            "ended early: nothing holds |") in markdown
    charts = sorted(p.name for p in written if p.suffix == ".svg")
    # Each figure by instances (at 4 steps) and by steps per flow (at 10 instances).
    assert charts == ["matrix.svg", "overhead.svg", *sorted(
        f"scale-{figure}-by-{by}.svg" for figure in ("time", "memory", "lost", "duplicated")
        for by in ("instances", "steps"))]
    for name in charts:
        root = ET.parse(tmp_path / "benchmarks" / name).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert f"benchmarks/{name}" in markdown


def test_a_section_not_measured_again_keeps_its_figures_and_options(tmp_path: Path) -> None:
    host = {"hostname": "ci", "platform": "Linux", "python": "3.11", "cpus": 2}
    earlier = {"created_at": "2026-01-01T00:00:00Z", "flow": "partner_approval", "host": host,
               "options": {"scale": [10, 100], "scale_steps": [4],
                           "scale_fault": "kill-worker+restart"},
               "measured": {"scale": {"at": "2026-01-01T00:00:00Z", "host": host,
                                      "load": [7.0, 9.0]}},
               "matrix": {"demo": matrix_of("none", None, ended="all finished"),
                   "sla": matrix_of("kill-worker", 3.25, ended="ended early: nothing holds")},
        "scale": [scale_row(10, 4, 4.2), scale_row(100, 4, 30.5)]}
    write_bench(earlier, tmp_path)
    effect = {"outside_bare_us": 0.05, "outside_wrapped_us": 0.7, "outside_overhead_us": 0.65,
              "outside_target_us": 2.0, "inside_ledger_ms": 1.0,
              "inside_plain_insert_ms": 2.0, "inside_ratio": 0.5}
    later = {"created_at": "2026-01-02T00:00:00Z", "flow": "partner_approval", "host": host,
             "options": {}, "effect": effect,
             "measured": {"effect": {"at": "2026-01-02T00:00:00Z", "host": host,
                                     "load": [1.0, 1.5]}}}

    write_bench(later, tmp_path)

    kept = json.loads((tmp_path / "benchmarks.json").read_text())
    assert kept["effect"] == effect
    assert kept["scale"] == earlier["scale"]
    assert kept["options"] == earlier["options"]
    assert set(kept["measured"]) == {"effect", "scale"}
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "load average 7.0 when this section started, 9.0" in markdown
    assert "load average 1.0 when this section started, 1.5" in markdown
    assert "| temporal | 100 | 4 | yes | 100 |" in markdown


def test_a_generated_scale_flow_has_the_sample_spikes_shape_with_the_steps_asked(
        tmp_path: Path) -> None:
    flow = generated_flow(6, tmp_path)

    assert [n.name for n in flow.nodes] == [
        "create_record", "request_approval", "approval", "apply_01", "apply_02", "apply_03",
        "apply_04"]
    assert load_flow(flow.source) == flow
    assert default_point(flow) == "apply_01:before-effect"
    with pytest.raises(ConfigError, match="3 steps or more"):
        generated_flow(2, tmp_path)


def test_a_ratio_whose_runs_disagree_by_more_than_half_is_called_noisy(tmp_path: Path) -> None:
    run = {"instances": 5, "flows_per_second": 2.0, "step_p50": 0.1, "wait_p50": 0.3}
    steady = {"median": 0.8, "low": 0.7, "high": 0.9, "runs": 3}
    noisy = {"median": 1.12, "low": 0.37, "high": 1.13, "runs": 3}
    results = {
        "created_at": "2026-01-01T00:00:00Z", "flow": "partner_approval",
        "host": {"hostname": "ci", "platform": "Linux", "python": "3.11", "cpus": 2},
        "options": {"instances": 5, "repeats": 3},
        "overhead": {engine: {"graduate": [run] * 3, "plain": [run] * 3,
                              "throughput_ratio": ratio, "step_latency_ratio": steady,
                              "wait_latency_ratio": None}
                     for engine, ratio in (("temporal", steady), ("celery-chain", noisy))},
    }

    write_bench(results, tmp_path)

    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "Noisy: the runs of one side disagree" in markdown
    assert "- celery-chain: flows/s ratio from 0.37 to 1.13 over 3 pairs of runs" in markdown
    assert "- temporal:" not in markdown


def test_cells_side_by_side_are_counted_once_against_the_wall_time(tmp_path: Path) -> None:
    # Two cells at once over a 10 s matrix: 0-8 s and 2-9 s, each recovering part of it.
    cells = [{"began": 100.0, "wall": 8.0, "recovery": 5.0, "recovery_span": (102.0, 107.0),
              "deadline_wait": 0.0, "harness": 3.0, "starting": 1.0, "flow": 1.5,
              "judging": 0.5},
             {"began": 102.0, "wall": 7.0, "recovery": 4.0, "recovery_span": (104.0, 108.0),
              "deadline_wait": 1.0, "harness": 2.0, "starting": 1.0, "flow": 0.5,
              "judging": 0.5}]

    split = matrix_split(cells, (100.0, 110.0))

    # Parts are cells' seconds, adding up to the cells' time (15 s in 10 s of wall time).
    assert split["cell_time"] == 15.0
    assert (split["recovery"], split["deadline_wait"], split["harness"]) == (9.0, 1.0, 5.0)
    assert (split["starting"], split["flow"], split["judging"]) == (2.0, 2.0, 1.0)
    # The flow up to each fault is never recovery: 9 of 9 + 1 + 2 s at best.
    assert split["best_share"] == pytest.approx(0.75)
    # Some cell recovered from 102 s to 108 s: 60 % of the wall time, not 90 %.
    assert split["recovery_covered"] == pytest.approx(0.6)
    # No run was under way in the last second.
    assert split["between_runs"] == pytest.approx(1.0)

    demo = {**matrix_of("none", None, ended="all finished"), "jobs": 2, "wall": 10.0, **split}
    results = {"created_at": "2026-01-01T00:00:00Z", "flow": "partner_approval",
               "host": {"hostname": "ci", "platform": "Linux", "python": "3.11", "cpus": 2},
               "options": {}, "matrix": {"demo": demo, "sla": matrix_of(
                   "kill-worker", 3.25, ended="all finished")}}
    write_bench(results, tmp_path)
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert "45.0 s deadline, 2 cell(s) at once" in markdown
    assert "The cells' own times add up to 15.0 s (1.5 times the wall time)" in markdown
    assert "engine recovery 9.0 s (60.0 %)" in markdown
    assert "inside an engine's recovery for 60 % of it" in markdown
    assert ("2.0 s went to starting each cell's workers and instances, 2.0 s to the flow's "
            "own steps") in markdown
    assert "(60.0 %: 20.0 points short of the target) cannot pass 75 %" in markdown
