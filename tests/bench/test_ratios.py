"""CI's short bench: graduate against the plain SDK on each engine, side by side on the
session's servers, must not fall further behind than benchmarks/baseline.json allows.
Ratios only: absolute times depend on the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graduate.bench import BenchOptions, run_bench
from graduate.config import Settings

REPO = Path(__file__).resolve().parents[2]
BASELINE = json.loads((REPO / "benchmarks" / "baseline.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_each_adapter_keeps_its_throughput_ratio_to_the_plain_sdk(settings: Settings) -> None:
    options = BenchOptions(flow=str(REPO / "spikes" / "partner_approval.toml"),
                           sections=("overhead",), engines=tuple(BASELINE["throughput_ratio"]),
                           instances=5, repeats=2, timeout=120)

    results = run_bench(settings, options)

    tolerance = BASELINE["tolerance"]
    for engine, floor in BASELINE["throughput_ratio"].items():
        ratio = results["overhead"][engine]["throughput_ratio"]
        assert ratio["runs"] == 2
        assert ratio["median"] >= floor * (1 - tolerance), (
            f"{engine}: graduate runs at {ratio['median']:.2f}x the plain SDK's flows per "
            f"second (from {ratio['low']:.2f} to {ratio['high']:.2f}), below the baseline "
            f"{floor:.2f}x less {tolerance:.0%}: profile the harness (graduate bench)")
