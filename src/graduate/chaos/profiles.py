"""Named sets of engine settings: each engine's own defaults, tuned production values,
and a project's own profiles from `[tool.graduate.profiles.NAME]` in pyproject.toml.

The evidence of every run records the effective settings, so a reader can tell what
a team gets without tuning from what it gets with it. A project profile starts from
a built-in one (`extends`, "defaults" unless said) and overrides settings per engine:

    [tool.graduate.profiles.production]
    description = "what we run in production"
    extends = "tuned"
    temporal = { heartbeat_timeout = 5 }
    celery-chain = { visibility_timeout = 3600 }
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graduate.adapters import all_engine_names, check_settings, describe
from graduate.config import graduate_subtable
from graduate.errors import ConfigError


class _Tuned(Mapping[str, Mapping[str, Any]]):
    """Each registered engine's own production settings, read from its description."""

    def __getitem__(self, engine: str) -> Mapping[str, Any]:
        if engine not in all_engine_names():
            raise KeyError(engine)
        return describe(engine).tuned

    def __iter__(self) -> Iterator[str]:
        return iter(all_engine_names())

    def __len__(self) -> int:
        return len(all_engine_names())


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # Per engine, the settings this profile overrides (none: the engine's defaults).
    engines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings(self, engine: str) -> dict[str, Any]:
        return dict(self.engines.get(engine, {}))


BUILT_IN: dict[str, Profile] = {
    "defaults": Profile("defaults", "each engine's own defaults, as a team gets them "
                                    "without tuning"),
    "tuned": Profile(
        "tuned",
        "what a team would set for production: late acknowledgement, redelivery of tasks "
        "whose worker died, prefetch 1, a short Redis visibility timeout (10 s, shortened "
        "so runs stay fast; production sets it above the longest task and the farthest "
        "countdown, since Redis gives back a message held longer, even by a live worker "
        "waiting for its ETA, and each copy runs: the chain's claims and leases let one "
        "copy act) swept every second; for Temporal, a "
        "heartbeat timeout (2 s; steps heartbeat as they start and while paused at a fault "
        "point), so a dead worker's step is retried (after its retry interval) without "
        "waiting out its start-to-close timeout, and a graceful shutdown window for its "
        "workers",
        _Tuned(),
    ),
}
# What --help lists; a project's own profiles come on top.
PROFILES: dict[str, str] = {name: profile.description for name, profile in BUILT_IN.items()}


def load_profiles(project_dir: Path) -> dict[str, Profile]:
    """The built-in profiles and those of the project's `[tool.graduate.profiles]`."""
    profiles = dict(BUILT_IN)
    tables, where_all = graduate_subtable(project_dir, "profiles")
    if tables is None:
        return profiles
    if not isinstance(tables, dict):
        raise ConfigError(f"{where_all} must be a table of profiles, each a table: "
                          "[tool.graduate.profiles.NAME]")
    for name, table in tables.items():
        where = f"{where_all.removesuffix(']')}.{name}]"
        if name in BUILT_IN:
            raise ConfigError(f"{where}: {name!r} is a built-in profile; give yours "
                              "another name and, to start from it, `extends = "
                              f"\"{name}\"`")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of engine settings")
        profiles[name] = _project_profile(name, table, where)
    return profiles


def _project_profile(name: str, table: dict[str, Any], where: str) -> Profile:
    base_name = table.get("extends", "defaults")
    if not isinstance(base_name, str) or base_name not in BUILT_IN:
        raise ConfigError(f"{where}: extends = {base_name!r}; a project profile extends "
                          f"one of: {', '.join(BUILT_IN)}")
    description = table.get("description", f"the project's profile {name!r}")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    base = BUILT_IN[base_name]
    engines = {engine: base.settings(engine) for engine in all_engine_names()}
    for key, value in table.items():
        if key in ("extends", "description"):
            continue
        if key not in all_engine_names():
            raise ConfigError(f"{where}: {key!r} is not an engine; keys are description, "
                              f"extends and the engines {', '.join(all_engine_names())}")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a table of settings, such as "
                              f"{key} = {{ {_example(key)} }}")
        try:
            check_settings(key, value)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from error
        engines[key].update(value)
    return Profile(name, f"{description} (extends {base_name})", engines)


def _example(engine: str) -> str:
    return describe(engine).example_setting


def require_profile(profiles: Mapping[str, Profile], name: str) -> Profile:
    """The profile called `name`, or a ConfigError that lists the known ones."""
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; choose one of: "
                          f"{', '.join(profiles)} (a project adds its own in "
                          "[tool.graduate.profiles.NAME] of pyproject.toml)")
    return profiles[name]


def profile_settings(profile: str, engine: str, project_dir: Path) -> dict[str, Any]:
    """The settings `profile` overrides for `engine` (empty for the defaults)."""
    return require_profile(load_profiles(project_dir), profile).settings(engine)
