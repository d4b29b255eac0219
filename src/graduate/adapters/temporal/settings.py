"""The Temporal settings graduate varies: each one's meaning, and the SDK's default.

No SDK import here: profiles are checked before any engine is opened.
"""

from __future__ import annotations

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


def check_overrides(overrides: Mapping[str, Any]) -> None:
    for key, value in overrides.items():
        if key not in DEFAULTS:
            raise ConfigError(f"{key!r} is not a Temporal setting graduate varies; use one "
                              f"of: {', '.join(DEFAULTS)}")
        if value is None:
            continue  # not set, as the SDK leaves it
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"Temporal setting {key} = {value!r} must be a number of "
                              "seconds, 0 or more")


def effective_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    check_overrides(overrides or {})
    return {**DEFAULTS, **(overrides or {})}
