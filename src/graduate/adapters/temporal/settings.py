"""The Temporal settings graduate varies: each one's meaning, and the SDK's default.

No SDK import here: profiles are checked before any engine is opened.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from graduate.errors import ConfigError

# Seconds. None is "not set", as the SDK leaves it.
DEFAULTS: Mapping[str, float | None] = {
    # How long a stopping worker lets its running activities finish before cancelling.
    "graceful_shutdown_timeout": 0.0,
    # Seconds without a heartbeat after which the server retries an activity elsewhere.
    "heartbeat_timeout": None,
}
# Switches, off unless given (so a run without one records only the times above).
SWITCHES: Mapping[str, bool] = {
    # Workers run as worker deployment versions (a build ID per version of the flow) and
    # pin each workflow to the version it started on: Temporal's worker versioning.
    "worker_versioning": False,
}


# Settings that may be left unset (None); the others always have a value.
UNSETTABLE = ("heartbeat_timeout",)
# A day: longer than any step graduate runs, and far inside what timedelta can hold.
MAX_SECONDS = 86_400.0


def check_overrides(overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if key in SWITCHES:
            if not isinstance(value, bool):
                raise ConfigError(f"Temporal setting {key} = {value!r} must be true or false")
            continue
        if key not in DEFAULTS:
            raise ConfigError(f"{key!r} is not a Temporal setting graduate varies; use one "
                              f"of: {', '.join([*DEFAULTS, *SWITCHES])}")
        if value is None and key in UNSETTABLE:
            continue  # not set, as the SDK leaves it
        # A heartbeat timeout of 0 would mean "none" to the SDK: say so by leaving it out.
        smallest = 0.0 if key == "graceful_shutdown_timeout" else 0.001
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not smallest <= value <= MAX_SECONDS):
            low = "0" if smallest == 0.0 else "more than 0"
            raise ConfigError(f"Temporal setting {key} = {value!r} must be a number of "
                              f"seconds, {low} and at most {MAX_SECONDS:g}")


def effective_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    check_overrides(overrides or {})
    return {**DEFAULTS, **(overrides or {})}
