"""A trivial but real extra engine, written as a package outside graduate would write one.

Its worker processes keep every instance in one SQLite file of the run and move each
instance on one node at a time under a lease; signals (and an operator's cancel) are
rows the next look at the instance reads. It proves that adding an engine is this
package plus passing the contract suite: `tests/engines/test_toy_engine.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graduate.adapters.base import Capabilities, Engine
from graduate.adapters.registry import EngineDescription
from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import Services

if TYPE_CHECKING:
    from graduate.apps import App


def _open(flow: Flow, services: Services, run_dir: Path, *,
          settings: dict[str, Any] | None = None,
          worker_services: Services | None = None, app: App | None = None,
          queue: str | None = None) -> Engine:
    from tests.engines.toy.engine import ToyEngine

    if queue is not None:
        raise ConfigError("the toy engine keeps its state in the run's folder: it runs on "
                          "workers graduate starts (--workers local), not registered ones")

    return ToyEngine(TOY, flow, worker_services or services, run_dir, settings=settings)


def _check(overrides: Mapping[str, Any]) -> None:
    unknown = set(overrides) - {"poll"}
    if unknown:
        raise ConfigError(f"{sorted(unknown)} are not settings of the toy engine; it has "
                          "one: poll (seconds between a worker's looks for due work)")


TOY = EngineDescription(
    name="toy", title="a toy engine", product="Toy", side="celery",
    summary="Toy: worker processes advance each instance one node at a time, its state in "
            "an SQLite file",
    capabilities=Capabilities(durable_progress=True, signals=True, timers=True,
                              compensation=True, versioning=False),
    needs_server=False, needs_broker=False, open=_open, check_settings=_check,
    tuned={"poll": 0.02}, example_setting="poll = 0.02",
)
# What the package's entry point in `graduate.engines` names.
DESCRIPTIONS = (TOY,)
