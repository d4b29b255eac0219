"""CI's short bench: graduate against the plain SDK on each engine, side by side on the
session's servers, must not fall further behind than benchmarks/baseline.json allows.
Ratios only: absolute times depend on the machine. (That the comparison fails on a
ratio past its tolerance is tested in tests/unit/test_bench_baseline.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.bench import BenchOptions, run_bench
from graduate.bench.baseline import load_baseline, regressions
from graduate.config import Settings

REPO = Path(__file__).resolve().parents[2]
BASELINE = load_baseline(REPO / "benchmarks" / "baseline.json")


@pytest.mark.slow
def test_each_adapter_keeps_its_throughput_ratio_to_the_plain_sdk(settings: Settings) -> None:
    options = BenchOptions(flow=str(REPO / "spikes" / "partner_approval.toml"),
                           sections=("overhead",), engines=tuple(BASELINE["throughput_ratio"]),
                           instances=5, repeats=2, timeout=120)

    results = run_bench(settings, options)

    assert all(results["overhead"][e]["throughput_ratio"]["runs"] == 2
               for e in BASELINE["throughput_ratio"])
    assert regressions(results["overhead"], BASELINE) == []
