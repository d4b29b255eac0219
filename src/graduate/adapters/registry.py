"""Each engine described once: its name, its title, the services it needs, what it can
do, and how to open it.

An engine package contributes its descriptions (`adapters/<engine>/description.py`,
which must not import the engine's SDK); `graduate.adapters` registers the built-in
ones. An installed package outside graduate names its descriptions with an entry point
in the group `graduate.engines`, read the first time the registry is asked. Everything
outside `adapters/` asks a description instead of comparing names.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from graduate.adapters.base import Capabilities, Engine
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services

if TYPE_CHECKING:
    from graduate.apps import App


class Opener(Protocol):
    """Opens the engine on `flow`; an app engine runs `app`, the team's own code, and
    takes the flow only as what to expect. `queue` names the queues the engine's client
    sends to when its workers are not the run's own (registered `graduate worker`s serve
    the queues of that name); by default the run's, named by its folder."""

    def __call__(self, flow: Flow, services: Services, run_dir: Path, *,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None,
                 app: App | None = None, queue: str | None = None) -> Engine: ...


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
    # An app engine runs a team's own code, declared in [tool.graduate.apps.NAME.<runs_app>]
    # ("temporal", "celery"), instead of graduate's model of a flow; `app_module` reads and
    # checks that declaration (`declare(table, where)`, `check(declaration, where, flow)`).
    runs_app: str = ""
    app_module: str = ""
    # The flow written directly with the engine's SDK, the baseline `graduate bench`
    # compares the adapter with: a module with `start_worker(spec, run_dir)` and
    # `open_client(spec)` (see `graduate.adapters.plain`); "" when it has none.
    plain_module: str = ""
    # The module of each process a run with one worker starts (`python -m MODULE`, a
    # helper such as Celery beat included): a matrix lane keeps spares of them (ADR
    # 0022). Empty when they are not graduate's own (a team's app).
    worker_modules: tuple[str, ...] = ()

    @property
    def keeps_app_tables(self) -> bool:
        """Each instance's progress lives in the app's own tables (`app_db_url`), which
        the harness reads: workers on other hosts must share them with it."""
        return self.needs_broker and self.capabilities.durable_progress


_REGISTRY: dict[str, EngineDescription] = {}
ENTRY_POINTS = "graduate.engines"
_installed_read = False


def _known() -> dict[str, EngineDescription]:
    """Every engine: registered, and installed with an entry point (read once, on the
    first question, so that a package may import graduate's modules as it loads)."""
    global _installed_read  # noqa: PLW0603 - the registry is one per process
    if not _installed_read:
        _installed_read = True
        for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
            _register_installed(entry)
    return _REGISTRY


def _register_installed(entry: importlib.metadata.EntryPoint) -> None:
    where = f"entry point {entry.name!r} ({entry.value}) in group {ENTRY_POINTS!r}"
    try:
        descriptions = tuple(entry.load())
    except Exception as error:
        raise ConfigError(f"{where} failed to load: {error}") from error
    for description in descriptions:
        if not isinstance(description, EngineDescription):
            raise ConfigError(f"{where} must name a sequence of EngineDescription; it "
                              f"holds {description!r}")
        if _REGISTRY.get(description.name, description) is not description:
            raise ConfigError(f"{where} describes engine {description.name!r}, which is "
                              "already known: give it a name of its own")
        register(description)


def register(description: EngineDescription) -> None:
    """Make an engine known to every command, profile, fault and report."""
    _REGISTRY[description.name] = description


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def engines() -> tuple[EngineDescription, ...]:
    """The engines that run a model of a flow (what a spike's matrix compares)."""
    return tuple(d for d in _known().values() if not d.runs_app)


def engine_names() -> tuple[str, ...]:
    return tuple(d.name for d in engines())


def all_engine_names() -> tuple[str, ...]:
    """Model and app engines: every name a profile or a stored run may use."""
    return tuple(_known())


def app_modules() -> dict[str, str]:
    """How a team declares its own app on each engine ([tool.graduate.apps.NAME.ENGINE]):
    the module that reads that table, by the table's name ("temporal", "celery")."""
    return {d.runs_app: d.app_module for d in _known().values() if d.runs_app}


def plain_modules() -> dict[str, str]:
    """The engines with a plain-SDK baseline to bench against, and its module."""
    return {d.name: d.plain_module for d in _known().values() if d.plain_module}


def engine_for_app(declared: str) -> EngineDescription:
    """The engine that runs a team's app declared for `declared` ("temporal", "celery")."""
    for description in _known().values():
        if description.runs_app == declared:
            return description
    raise ConfigError(f"no engine runs a team's {declared!r} app; apps run on: "
                      f"{', '.join(d.runs_app for d in _REGISTRY.values() if d.runs_app)}")


def describe(name: str) -> EngineDescription:
    """The description of engine `name`, or a ConfigError that lists the known ones."""
    if name not in _known():
        raise ConfigError(f"unknown engine {name!r}; choose one of: "
                          f"{', '.join(engine_names())}")
    return _REGISTRY[name]
