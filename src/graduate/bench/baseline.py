"""The ratios CI's short bench must keep (`benchmarks/baseline.json`), and which of a
bench's measured ratios fell past their tolerance: ratios only, never absolute times,
which depend on the machine."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graduate.errors import ConfigError


def load_baseline(path: Path) -> dict[str, Any]:
    """`benchmarks/baseline.json`: a `tolerance` (a fraction from 0 to 1) and each
    engine's `throughput_ratio` floor; refused, saying what to fix, when malformed."""
    try:
        baseline = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the bench baseline {path}: {error}") from error
    tolerance = baseline.get("tolerance") if isinstance(baseline, dict) else None
    ratios = baseline.get("throughput_ratio") if isinstance(baseline, dict) else None
    if not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
        raise ConfigError(f"{path}: give \"tolerance\" as a fraction from 0 up to 1 (0.35 "
                          "lets a ratio fall 35 % below its floor)")
    if not isinstance(ratios, dict) or not ratios or not all(
            isinstance(v, int | float) and v > 0 for v in ratios.values()):
        raise ConfigError(f"{path}: give \"throughput_ratio\" as each engine's positive "
                          "ratio graduate/plain SDK, e.g. {\"temporal\": 0.64}")
    return dict(baseline)


def regressions(overhead: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """A sentence for each engine of `baseline` whose measured median flows-per-second
    ratio (`overhead`, as `graduate bench` measures it) fell more than the baseline's
    tolerance below its floor, or that was not measured at all; empty when none did."""
    tolerance = float(baseline["tolerance"])
    found = []
    for engine, floor in baseline["throughput_ratio"].items():
        measured = overhead.get(engine)
        if measured is None:
            found.append(f"{engine}: not measured; the baseline holds a ratio for it")
            continue
        ratio = measured["throughput_ratio"]
        least = floor * (1 - tolerance)
        if ratio["median"] < least:
            found.append(
                f"{engine}: graduate runs at {ratio['median']:.2f}x the plain SDK's flows per "
                f"second (from {ratio['low']:.2f} to {ratio['high']:.2f} over "
                f"{ratio['runs']:g} runs), below the baseline {floor:.2f}x less "
                f"{tolerance:.0%} ({least:.2f}x): profile the harness (graduate bench)")
    return found
