"""Named sets of engine settings: each engine's own defaults, and tuned production values.

The evidence of every run records the effective settings, so a reader can tell what
a team gets without tuning from what it gets with it.
"""

from __future__ import annotations

from typing import Any

from graduate.errors import ConfigError

PROFILES: dict[str, str] = {
    "defaults": "each engine's own defaults, as a team gets them without tuning",
    "tuned": "what a team would set for production: late acknowledgement, redelivery of "
             "tasks whose worker died, prefetch 1, a short Redis visibility timeout (10 s, "
             "shortened so runs stay fast; production sets it above the longest task) swept "
             "every second, and a graceful shutdown window for Temporal workers",
}

_CELERY_TUNED: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "visibility_timeout": 10,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
_TUNED: dict[str, dict[str, Any]] = {
    "temporal": {"graceful_shutdown_timeout": 10.0},
    "celery-chain": _CELERY_TUNED,
    # The state machine's own recovery: a step's lease outlives its time limit by 1 s,
    # and an idle row is nudged after 2 s.
    "celery-state-machine": {**_CELERY_TUNED, "lease_margin": 1.0, "idle_grace": 2.0},
}


def profile_settings(profile: str, engine: str) -> dict[str, Any]:
    """The settings `profile` overrides for `engine` (empty for the defaults)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    if profile == "defaults":
        return {}
    return dict(_TUNED[engine])
