"""A team's own application, declared in `[tool.graduate.apps.NAME]` of pyproject.toml.

    [tool.graduate.apps.orders]
    flow = "flows/orders.toml"      # the expected steps, waits and compensations
    audit = "orders.audit:records"  # optional: (tenant_id, entity_id) -> the audit
                                    # records the team's systems kept about the entity

    [tool.graduate.apps.orders.temporal]
    worker = "orders.temporal:create_worker"  # () -> graduate.apps.TemporalWorker
    start = "orders.temporal:start_order"     # async (client, InstanceRequest) -> None

    [tool.graduate.apps.orders.celery]
    app = "orders.celery:app"                 # the celery.Celery instance
    queues = ["orders"]
    beat = false
    start = "orders.celery:start_order"       # (InstanceRequest) -> None

The flow only says what to expect; the code is the team's. `load_apps` reads and checks
the declarations without importing anything; `check_app` then imports the team's
modules and refuses, before anything runs, a module that is missing, a function of the
wrong shape, or a `graduate.effect` whose name no step of the flow has.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graduate.adapters import (
    all_engine_names,
    app_modules,
    check_engine,
    describe,
    engine_for_app,
    engine_names,
)
from graduate.config import graduate_subtable
from graduate.errors import ConfigError, FlowError
from graduate.flow import Flow, load_flow

_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
AUDIT_SHAPE = ("def records(tenant_id, entity_id): the audit records (event envelopes, as "
               "dicts, event_type the effect's name) the team's systems kept about the entity")


@dataclass(frozen=True)
class TemporalWorker:
    """What a Temporal worker factory returns: graduate builds the worker from it (with
    its own client, interceptors and executor)."""

    task_queue: str
    workflows: Sequence[type]
    activities: Sequence[Callable[..., Any]]
    # The app's own Temporal interceptors (temporalio.contrib.opentelemetry's
    # TracingInterceptor, say): on its worker, and on the client that starts instances.
    interceptors: Sequence[Any] = ()


@dataclass(frozen=True)
class App:
    """One declared application: the flow it implements, and per engine its table."""

    name: str
    flow: Flow
    engines: Mapping[str, Mapping[str, Any]]  # "temporal" / "celery" -> its declaration
    project_dir: Path
    where: str  # the table, for messages
    audit: str | None = None  # module:function reading the team's own audit records

    def references(self) -> list[str]:
        """Every `module:attribute` the declaration names."""
        return [value for table in self.engines.values() for value in table.values()
                if isinstance(value, str) and _REFERENCE.match(value)
                ] + ([self.audit] if self.audit else [])

    def audit_records(self, tenant_id: str, entity_id: str) -> list[Mapping[str, Any]]:
        """The audit records the team's systems kept about one entity, by the declared
        reader; a ConfigError when the app declares none or it returns no records."""
        if self.audit is None:
            raise ConfigError(f"{self.where} declares no audit reader; add "
                              f"audit = \"module:function\", {AUDIT_SHAPE}")
        with project_on_path(self.project_dir):
            read = resolve(self.audit, self.where)
            found = list(read(tenant_id, entity_id))
        if not all(isinstance(item, Mapping) for item in found):
            raise ConfigError(f"{self.where}: {self.audit} must return dicts: {AUDIT_SHAPE}")
        return found


def load_apps(project_dir: Path) -> dict[str, App]:
    """The project's declared applications, checked as data (nothing is imported)."""
    tables, where_all = graduate_subtable(project_dir, "apps")
    if tables is None:
        return {}
    if not isinstance(tables, dict):
        raise ConfigError(f"{where_all} must be a table of applications: "
                          "[tool.graduate.apps.NAME]")
    apps = {}
    for name, table in tables.items():
        where = where_all.replace("apps]", f"apps.{name}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table with flow = ... and an engine table")
        declarable = app_modules()
        if unknown := sorted(set(table) - {"flow", "audit", *declarable}):
            raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: flow, audit, "
                              f"{', '.join(declarable)}")
        flow_ref = table.get("flow")
        if not isinstance(flow_ref, str) or not flow_ref:
            raise ConfigError(f"{where}: flow is missing; add flow = \"path/to/flow.toml\" "
                              "(the steps, waits and compensations the app implements)")
        try:
            flow = load_flow(project_dir / flow_ref if flow_ref.endswith(".toml")
                             else flow_ref)
        except FlowError as error:
            raise ConfigError(f"{where}: {error}") from error
        engines = {}
        for engine, module in declarable.items():
            if engine in table:
                engines[engine] = importlib.import_module(module).declare(
                    table[engine], f"{where[:-1]}.{engine}]")
        if not engines:
            raise ConfigError(f"{where} declares no engine; add a "
                              f"{' or '.join(f'[...{name}.{e}]' for e in declarable)}"
                              " table")
        audit = reference(table, "audit", where, AUDIT_SHAPE) if "audit" in table else None
        apps[name] = App(name, flow, engines, project_dir, where, audit)
    return apps


def find_app(project_dir: Path, name: str) -> App:
    apps = load_apps(project_dir)
    if name not in apps:
        known = ", ".join(sorted(apps)) or "none"
        raise ConfigError(f"no application {name!r} is declared in {project_dir / 'pyproject.toml'}"
                          f" [tool.graduate.apps]; declared: {known}")
    return apps[name]


@dataclass(frozen=True)
class Target:
    """What a command runs: a model of a flow on an engine, or a team's app on the engine
    that runs it (the flow then is what the app declares it implements)."""

    flow: Flow
    flow_ref: str  # how the run's options name the flow: as given, or the app's flow file
    engine: str  # a registered engine: a model's, or an app engine ("temporal-app")
    app: App | None = None


def resolve_target(project_dir: Path, spikes_dir: Path, name: str, engine: str) -> Target:
    """`name` as a declared app (checked: a bad declaration is refused here, before
    anything runs), run by the app engine for `engine` ("temporal", "celery", or the app
    engine's own name); otherwise a flow, by name, file or module:ATTRIBUTE, on `engine`."""
    apps = load_apps(project_dir)
    if name not in apps:
        return Target(load_flow(name, spikes_dir=spikes_dir), name, check_engine(engine))
    app = apps[name]
    declared = engine
    if engine in all_engine_names() and describe(engine).runs_app:
        declared = describe(engine).runs_app  # "temporal-app" given: "temporal" declared
    if declared not in app.engines:
        raise ConfigError(f"app {name!r} declares no {engine!r} engine; it runs on: "
                          f"{', '.join(app.engines)} ({app.where})")
    check_app(app)
    return Target(app.flow, app.flow.source, engine_for_app(declared).name, app)


def app_of_run(project_dir: Path, engine: str, flow_source: str) -> App | None:
    """The declared app an earlier run ran on `engine` (an app engine) with the flow at
    `flow_source`, as the ledger records them; None for a model's engine."""
    declared = describe(engine).runs_app
    if not declared:
        return None
    found = [app for app in load_apps(project_dir).values()
             if declared in app.engines and app.flow.source == flow_source]
    if len(found) != 1:
        names = ", ".join(app.name for app in found) or "none"
        raise ConfigError(f"the run was of a team's app on {engine}, with flow {flow_source}; "
                          f"the apps declared in {project_dir / 'pyproject.toml'} that match: "
                          f"{names}. Run the command in the project that declares it once")
    return found[0]


def target_engines(project_dir: Path, name: str) -> tuple[str, ...]:
    """The engines `name` runs on: those an app declares, or every model engine."""
    apps = load_apps(project_dir)
    return tuple(apps[name].engines) if name in apps else engine_names()


def reference(table: Mapping[str, Any], key: str, where: str, shape: str) -> str:
    """A required `module:attribute` value of a declaration."""
    value = table.get(key)
    if value is None:
        raise ConfigError(f"{where}: {key} is missing; add {key} = \"module:attribute\", "
                          f"{shape}")
    if not isinstance(value, str) or not _REFERENCE.match(value):
        raise ConfigError(f"{where}: {key} = {value!r} must be \"module:attribute\", {shape}")
    return value


def resolve(ref: str, where: str) -> Any:
    """Import `module:attribute`; a ConfigError that names the declaration when it fails."""
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as error:  # the team's module may fail in any way
        raise ConfigError(f"{where}: cannot import {module_name!r} for {ref!r}: "
                          f"{type(error).__name__}: {error}") from error
    if not hasattr(module, attribute):
        raise ConfigError(f"{where}: module {module_name!r} has no {attribute!r} (for {ref!r})")
    return getattr(module, attribute)


@contextmanager
def project_on_path(project_dir: Path) -> Iterator[None]:
    """The team's modules import as they do in the project's own folder."""
    entry = str(project_dir.resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            sys.path.remove(entry)


def check_app(app: App) -> None:
    """Import the app's modules and refuse, with the fix, what cannot run: a missing
    module, a function of the wrong shape, an effect name the flow does not have."""
    with project_on_path(app.project_dir):
        for engine, declaration in app.engines.items():
            importlib.import_module(app_modules()[engine]).check(
                declaration, f"{app.where[:-1]}.{engine}]", app.flow)
        if app.audit is not None:
            check_function(resolve(app.audit, app.where), app.audit, app.where, parameters=2,
                           coroutine=False, shape=AUDIT_SHAPE)
        for path, line, name, step in effect_calls(_module_files(app)):
            _check_effect(app, path, line, name, step)


def _module_files(app: App) -> list[Path]:
    """The Python files of every package that the declaration's modules belong to."""
    folders = set()
    for ref in app.references():
        spec = importlib.util.find_spec(ref.partition(":")[0])
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            folders.add(Path(spec.origin).parent)
    return sorted({path for folder in folders for path in folder.rglob("*.py")})


def effect_calls(files: Sequence[Path]) -> Iterator[tuple[Path, int, str, str | None]]:
    """Every `effect("NAME", ..., step="STEP")` with literal names in `files`."""
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except (SyntaxError, UnicodeDecodeError, RecursionError, MemoryError):
            # Unreadable, or nested too deeply for the parser (generated code): importing
            # the module reports it, if the app uses it.
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not _is_effect(node.func) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            step = next((k.value.value for k in node.keywords if k.arg == "step"
                         and isinstance(k.value, ast.Constant)
                         and isinstance(k.value.value, str)), None)
            yield path, node.lineno, first.value, step


def _is_effect(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "effect") or (
        isinstance(func, ast.Attribute) and func.attr == "effect")


def _check_effect(app: App, path: Path, line: int, name: str, step: str | None) -> None:
    flow = app.flow
    steps = {s.name for s in flow.effect_steps}
    effects = {s.effect for s in flow.effect_steps} | {s.compensation for s in flow.steps
                                                        if s.compensation}
    at = f"{path}:{line}"
    if step is not None and step not in steps:
        raise ConfigError(f"{at}: graduate.effect({name!r}, step={step!r}) names a step that "
                          f"flow {flow.name!r} of app {app.name!r} does not have; its steps: "
                          f"{', '.join(sorted(steps))}")
    if step is None and name not in effects:
        raise ConfigError(f"{at}: graduate.effect({name!r}) names an effect that no step of "
                          f"flow {flow.name!r} (app {app.name!r}) has; its effects: "
                          f"{', '.join(sorted(effects))}. Rename it, or add step= to say "
                          "which step it belongs to")


def check_function(value: Any, ref: str, where: str, *, parameters: int,
                   coroutine: bool, shape: str) -> None:
    """Refuse `value` unless it is a (coroutine) function taking `parameters` arguments."""
    if not callable(value):
        raise ConfigError(f"{where}: {ref!r} is a {type(value).__name__}, not a function; "
                          f"it must be {shape}")
    if inspect.iscoroutinefunction(value) != coroutine:
        kind = "an async function (async def)" if coroutine else "a plain function (def)"
        raise ConfigError(f"{where}: {ref!r} must be {kind}: {shape}")
    try:
        inspect.signature(value).bind(*range(parameters))
    except TypeError as error:
        raise ConfigError(f"{where}: {ref!r} cannot be called with {parameters} argument(s) "
                          f"({error}); it must be {shape}") from error
    except ValueError:
        return  # a builtin without a signature: it will say so when called


def table_of(value: Any, where: str, allowed: set[str]) -> Mapping[str, Any]:
    """An engine's declaration table, with only the keys it knows."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    if unknown := sorted(set(value) - allowed):
        raise ConfigError(f"{where} has unknown key(s) {unknown}; allowed: "
                          f"{', '.join(sorted(allowed))}")
    return value
