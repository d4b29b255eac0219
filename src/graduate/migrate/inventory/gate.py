"""`--fail-on`: what makes an inventory fail a CI job.

A threshold is a hazard severity (`high`, `medium`, `low`: a hazard at or above it) or a
recommendation (`graduate`, `spike`, `harden`: a flow recommended at least that strongly).
"""

from __future__ import annotations

from graduate.errors import ConfigError
from graduate.migrate.inventory.model import Inventory, Recommendation, Severity

_RECOMMENDATIONS = {"graduate": Recommendation.GRADUATE, "spike": Recommendation.SPIKE_FIRST,
                    "harden": Recommendation.HARDEN}
THRESHOLDS = (*(s.value for s in Severity), *_RECOMMENDATIONS)


def check(thresholds: list[str]) -> list[str]:
    """The thresholds, or a ConfigError naming the one that is not known."""
    for threshold in thresholds:
        if threshold not in THRESHOLDS:
            raise ConfigError(f"--fail-on {threshold!r} is not known; use one of "
                              f"{', '.join(THRESHOLDS)}")
    return thresholds


def failures(found: Inventory, thresholds: list[str]) -> list[str]:
    """Why the inventory fails each threshold; empty when it passes them all."""
    reasons: list[str] = []
    for threshold in thresholds:
        if threshold in _RECOMMENDATIONS:
            floor = _RECOMMENDATIONS[threshold]
            reasons += [f"flow {f.name}: {f.recommendation}" for f in found.flows
                        if f.recommendation.rank >= floor.rank]
        else:
            severity = Severity(check([threshold])[0])
            reasons += [f"{h.severity} hazard {h.rule} at {h.location}" for h in found.hazards
                        if h.severity.rank >= severity.rank]
    return list(dict.fromkeys(reasons))
