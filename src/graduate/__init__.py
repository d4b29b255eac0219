"""graduate: run one business flow on Celery and on Temporal, break it, and prove what happened.

This package is the door to the library: import from `graduate`, not from the modules
under it.

    import graduate

    result = graduate.chaos("partner_approval", engine="temporal", fault="kill-worker",
                            at="activate:before-effect")
    print(result.verdict.passed, [i.verdict for i in result.instances])

`run`, `chaos`, `matrix` and `signal` are what the command line and the pytest plugin
call (`resolve` reads a flow or an app once, for a caller that needs it first); the
names below them are the values they take and return. `effect` records a team's own
side effects under a run; `inventory` reads a Celery codebase for what
should graduate. Every error graduate raises on purpose is a
`GraduateError`; bad input is a `ConfigError`, a service that cannot be started or
reached a `ServiceError`.

Production code imports this package for `graduate.effect` alone, so importing it loads
only that and the errors: the API, the inventory and their values are imported the
first time one of their names is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from graduate.errors import ConfigError, EngineError, FlowError, GraduateError, ServiceError
from graduate.instrument import effect

if TYPE_CHECKING:
    from graduate.adapters.base import InstanceState, InstanceStatus
    from graduate.api import MatrixResult, SignalSent, chaos, matrix, resolve, run, signal
    from graduate.apps import Target
    from graduate.chaos.faults import FaultPlan
    from graduate.chaos.harness import ChaosResult
    from graduate.chaos.matrix import CellOutcome
    from graduate.check import EffectVerdict, InstanceVerdict, Resume, RunVerdict, Verdict
    from graduate.config import Settings, load_settings
    from graduate.migrate.inventory import Inventory, inventory
    from graduate.runner import Decision, Failure, InstanceResult, RunResult
    from graduate.runs.timeline import TimelineEvent

# Each name the API brings, and the module it lives in.
_LAZY = {
    **dict.fromkeys(("InstanceState", "InstanceStatus"), "graduate.adapters.base"),
    **dict.fromkeys(("MatrixResult", "SignalSent", "chaos", "matrix", "resolve", "run",
                     "signal"), "graduate.api"),
    "Target": "graduate.apps",
    "FaultPlan": "graduate.chaos.faults",
    "ChaosResult": "graduate.chaos.harness",
    "CellOutcome": "graduate.chaos.matrix",
    **dict.fromkeys(("EffectVerdict", "InstanceVerdict", "Resume", "RunVerdict", "Verdict"),
                    "graduate.check"),
    **dict.fromkeys(("Settings", "load_settings"), "graduate.config"),
    **dict.fromkeys(("Inventory", "inventory"), "graduate.migrate.inventory"),
    **dict.fromkeys(("Decision", "Failure", "InstanceResult", "RunResult"), "graduate.runner"),
    "TimelineEvent": "graduate.runs.timeline",
}

__all__ = [
    "CellOutcome",
    "ChaosResult",
    "ConfigError",
    "Decision",
    "EffectVerdict",
    "EngineError",
    "Failure",
    "FaultPlan",
    "FlowError",
    "GraduateError",
    "InstanceResult",
    "InstanceState",
    "InstanceStatus",
    "InstanceVerdict",
    "Inventory",
    "MatrixResult",
    "Resume",
    "RunResult",
    "RunVerdict",
    "ServiceError",
    "Settings",
    "SignalSent",
    "Target",
    "TimelineEvent",
    "Verdict",
    "chaos",
    "effect",
    "inventory",
    "load_settings",
    "matrix",
    "resolve",
    "run",
    "signal",
]
__version__ = "0.1.0"

# `graduate.chaos` is the function; `graduate/chaos/` is also a package. Python binds a
# subpackage to its parent's attribute when the subpackage is first imported, so the
# package is imported here, its binding dropped, and the name left to `__getattr__`:
# importing `graduate.chaos.harness` later finds the package loaded and binds nothing.
importlib.import_module("graduate.chaos")
del globals()["chaos"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'graduate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # looked up once
    return value
