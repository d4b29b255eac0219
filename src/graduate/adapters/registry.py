"""Each engine described once: its name, its title, the services it needs, what it can
do, and how to open it.

An engine package contributes its descriptions (`adapters/<engine>/description.py`,
which must not import the engine's SDK); `graduate.adapters` registers the built-in
ones. Everything outside `adapters/` asks a description instead of comparing names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from graduate.adapters.base import Capabilities, Engine
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services


class Opener(Protocol):
    def __call__(self, flow: Flow, services: Services, run_dir: Path, *,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None) -> Engine: ...


@dataclass(frozen=True)
class EngineDescription:
    """What graduate knows of one engine (or one strategy of an engine)."""

    name: str  # as written on the command line and in the evidence
    title: str  # in a sentence: "Temporal", "a Celery chain"
    summary: str  # for a report: what the engine is and where it keeps progress
    product: str  # the product a team would adopt: "Temporal", "Celery"
    # The side of the source document's table this engine stands for.
    side: Literal["temporal", "celery"]
    capabilities: Capabilities
    needs_server: bool  # a Temporal server
    needs_broker: bool  # a Celery broker (and its result backend)
    open: Opener
    check_settings: Callable[[Mapping[str, Any]], None]
    tuned: Mapping[str, Any] = field(default_factory=dict)  # the "tuned" profile's settings
    example_setting: str = ""  # one line of TOML, for an error message


_REGISTRY: dict[str, EngineDescription] = {}


def register(description: EngineDescription) -> None:
    """Make an engine known to every command, profile, fault and report."""
    _REGISTRY[description.name] = description


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def engines() -> tuple[EngineDescription, ...]:
    return tuple(_REGISTRY.values())


def engine_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def describe(name: str) -> EngineDescription:
    """The description of engine `name`, or a ConfigError that lists the known ones."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown engine {name!r}; choose one of: "
                          f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]
