"""The Celery configuration of a codebase, wherever it lives, and the broker it implies.

Sources, in the order a value is taken (the first one found wins): `Celery(...)`
arguments, `app.conf.update(...)`, `app.conf.key = ...`, the object or module named by
`config_from_object` (a class, `celeryconfig.py`, Django settings with the `CELERY_`
namespace or old-style upper-case names), and `rabbitmq.conf` for the broker's own
delivery acknowledgement timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from graduate.migrate.inventory.model import Location
from graduate.migrate.inventory.reader import App, Call, ModuleFacts
from graduate.migrate.inventory.source import files
from graduate.migrate.inventory.symbols import Symbols
from graduate.migrate.inventory.values import FromEnv, Ref, seconds

# Redis transport: "the default visibility timeout for Redis is 1 hour"
# (docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout).
DEFAULT_VISIBILITY_TIMEOUT = 3600.0
# RabbitMQ closes a channel whose delivery stays unacknowledged longer than
# consumer_timeout, 30 minutes by default (rabbitmq.com/docs/consumers#acknowledgement-timeout;
# Celery's "ETA and Countdown" warning in docs.celeryq.dev/en/stable/userguide/calling.html).
DEFAULT_CONSUMER_TIMEOUT = 1800.0

Broker = Literal["redis", "rabbitmq", "other", "unknown"]

# Old-style names that do not map by dropping a prefix (celery/app/defaults.py).
_TASK_SETTINGS = frozenset({"acks_late", "reject_on_worker_lost", "time_limit",
                            "soft_time_limit", "default_retry_delay", "default_queue",
                            "routes", "annotations", "serializer", "always_eager"})
_PREFIXES = ("CELERYD_", "CELERYBEAT_", "CELERY_")
_SETTING_NAME = re.compile(r"^(CELERY|CELERYD|CELERYBEAT|BROKER)_[A-Z0-9_]+$")
# Where Django-style settings live: settings.py, settings/base.py, config/prod.py, conf.py.
_SETTINGS_MODULE = re.compile(r"settings|config|conf")


@dataclass(frozen=True)
class SettingValue:
    key: str            # the setting's modern name, e.g. "task_acks_late"
    written: str        # as the code names it, e.g. "CELERY_TASK_ACKS_LATE"
    value: object
    location: Location
    app: str | None = None   # the app it configures; None: whichever app reads it


@dataclass(frozen=True)
class CelerySettings:
    """The settings the code sets, and the broker facts the hazards are judged against."""

    values: tuple[SettingValue, ...]
    broker: Broker
    visibility_timeout: float
    visibility_timeout_at: Location | None       # None: Celery's default
    consumer_timeout: float
    consumer_timeout_at: Location | None         # None: RabbitMQ's default
    # When a Django project holds several settings modules: the one read (and why), and
    # the alternatives whose settings were not merged into it.
    read_from: str | None = None
    alternatives: tuple[str, ...] = ()

    def get(self, key: str) -> SettingValue | None:
        return next((v for v in self.values if v.key == key), None)

    def for_app(self, app: str | None) -> CelerySettings:
        """The settings one app runs with, when a codebase holds several apps; for None,
        only the settings no app claims (a shared task whose app cannot be told)."""
        values = tuple(v for v in self.values if v.app in (None, app))
        return _derive(values, self.consumer_timeout, self.consumer_timeout_at,
                       self.read_from, self.alternatives)

    def summary(self) -> tuple[tuple[str, str], ...]:
        vt = f"{self.visibility_timeout:g} s " + (
            f"({self.visibility_timeout_at})" if self.visibility_timeout_at else "(default)")
        ct = f"{self.consumer_timeout:g} s " + (
            f"({self.consumer_timeout_at})" if self.consumer_timeout_at else "(default)")
        rows: list[tuple[str, str]] = [("broker", self.broker)]
        if self.read_from is not None:
            rows.append(("settings read", self.read_from))
        if self.alternatives:
            rows.append(("alternative settings, not merged", ", ".join(self.alternatives)))
        if self.broker in ("redis", "unknown"):
            rows.append(("visibility_timeout", vt))
        if self.broker in ("rabbitmq", "unknown"):
            rows.append(("consumer_timeout", ct))
        for key in ("task_acks_late", "task_reject_on_worker_lost", "task_time_limit",
                    "task_soft_time_limit"):
            if (found := self.get(key)) is not None:
                rows.append((key, f"{found.value} ({found.location})"))
        return tuple(rows)


@dataclass(frozen=True)
class CeleryApp:
    """A Celery app the code creates: `app = Celery(...)`, `app = make_celery()` where
    the project's `make_celery` builds one (an application factory), `app = MyCelery()`
    for a subclass of Celery, or an object whose class the code does not name
    (`app = import_string(path)(main="x")`) that the code uses as a Celery app."""

    name: str                   # qualified, e.g. "proj.worker.app"
    facts: ModuleFacts          # the module that binds the name
    line: int
    options: dict[str, object]  # the arguments of `Celery(...)`
    built_at: Location          # where `Celery(...)` is called
    factory: str | None         # the factory's own settings key, "module:function()"
    # How an app whose class is not known statically was recognised: its uses that only a
    # Celery app has ("config_from_object at proj/celery.py:9"); () when its class is known.
    recognised_by: tuple[str, ...] = ()
    subclass: str | None = None  # the project's subclass of Celery it is made from


# What only a Celery app does: an object used so is one, whatever made it. Each of these
# is Celery's own API (celery.app.base.Celery); other task libraries (huey, dramatiq, rq,
# procrastinate, taskiq, invoke, prefect) name theirs otherwise.
_APP_METHODS = frozenset({"config_from_object", "autodiscover_tasks", "send_task",
                          "add_periodic_task", "add_defaults"})
_APP_SIGNALS = frozenset({"on_configure", "on_after_configure", "on_after_finalize",
                          "on_after_fork"})
# Options of `@x.task(...)` that only Celery's task decorator takes: a bare `@x.task`, or
# one with options other libraries share (name, queue, priority, max_retries, retries,
# expires), is no evidence (huey's and procrastinate's apps have `.task` too).
_CELERY_ONLY_TASK_OPTIONS = frozenset({
    "bind", "acks_late", "acks_on_failure_or_timeout", "autoretry_for", "dont_autoretry_for",
    "retry_backoff", "retry_backoff_max", "retry_jitter", "retry_kwargs", "ignore_result",
    "soft_time_limit", "default_retry_delay", "rate_limit", "reject_on_worker_lost",
    "track_started", "throws", "typing", "store_errors_even_if_ignored", "base",
    "serializer", "send_events", "trail"})
# Setting names that are Celery's (lower-case, as `app.conf` takes them).
_CELERY_SETTING = re.compile(r"^(broker_|result_|task_|worker_|beat_|celery_|"
                             r"timezone$|enable_utc$|accept_content$|imports$|include$)")


def celery_apps(modules: list[ModuleFacts], symbols: Symbols) -> list[CeleryApp]:
    """Every app the codebase creates, directly, through a factory function or a subclass
    of its own, or through a class it does not name but uses as a Celery app."""
    apps: list[CeleryApp] = []
    unknown: list[tuple[ModuleFacts, App]] = []
    for facts in modules:
        for app in facts.apps:
            name = f"{facts.module}.{app.var}".lstrip(".")
            if app.factory is None:  # Celery's own class
                apps.append(CeleryApp(name, facts, app.line, app.kwargs,
                                      Location(facts.path, app.line), None))
            elif (built := _built_by(facts, app.factory, symbols)) is not None:
                owner, function, call = built
                apps.append(CeleryApp(name, facts, app.line, call.kwargs,
                                      Location(owner.path, call.line),
                                      f"{owner.module}:{function}()"))
            elif _subclasses_celery(facts, app.factory, symbols, 0):
                apps.append(CeleryApp(name, facts, app.line, app.kwargs,
                                      Location(facts.path, app.line), None,
                                      subclass=app.factory))
            else:
                unknown.append((facts, app))
    if unknown:
        used = _used_as_app(modules, symbols)
        for facts, app in unknown:
            name = f"{facts.module}.{app.var}".lstrip(".")
            if name in used:
                # The app's own methods first (the strongest sign), in its own module
                # first, then its task options.
                here = f" at {facts.path}:"
                uses = sorted(dict.fromkeys(used[name]),
                              key=lambda u: (u.startswith("@"), here not in u))
                shown = uses[:_USES_SHOWN] + ([f"{len(uses) - _USES_SHOWN} more"]
                                             if len(uses) > _USES_SHOWN else [])
                apps.append(CeleryApp(name, facts, app.line, {},
                                      Location(facts.path, app.line), None, tuple(shown)))
    return apps


_USES_SHOWN = 3


def _subclasses_celery(facts: ModuleFacts, callee: str, symbols: Symbols, depth: int) -> bool:
    """Whether `callee` is a project class deriving from `celery.Celery`."""
    full = symbols.resolve(facts, callee)
    if full is None or depth > 5:
        return False
    owner, name = symbols.defined[full], full.rsplit(".", 1)[-1]
    cls = next((c for c in owner.classes if c.name == name), None)
    return cls is not None and any(
        symbols.qualify(owner, base) in ("celery.Celery", "celery.app.base.Celery")
        or _subclasses_celery(owner, base, symbols, depth + 1) for base in cls.bases)


def _used_as_app(modules: list[ModuleFacts], symbols: Symbols) -> dict[str, list[str]]:
    """Project names used as only a Celery app is used, each with where and how."""
    used: dict[str, list[str]] = {}

    def use(facts: ModuleFacts, ref: str | None, how: str, line: int) -> None:
        if ref and (full := symbols.resolve(facts, ref)) is not None:
            used.setdefault(full, []).append(f"{how} at {facts.path}:{line}")

    for facts in modules:
        for call in facts.calls:
            if call.method in _APP_METHODS:
                use(facts, call.base, call.method or "", call.line)
            elif call.method == "update" and (call.base or "").endswith(".conf") and any(
                    _CELERY_SETTING.match(str(key)) for key in _keys(call)):
                use(facts, (call.base or "")[:-5], "conf.update", call.line)
        for write in facts.conf_writes:
            if _CELERY_SETTING.match(write.key):
                use(facts, write.app, f"conf.{write.key}", write.line)
        decorators = [d for f in facts.functions for d in f.decorators] + [
            r.decorator for r in facts.registrations]
        for decorator in decorators:
            ref = decorator.ref or ""
            head, _, attribute = ref.rpartition(".")
            options = sorted(_CELERY_ONLY_TASK_OPTIONS.intersection(decorator.kwargs))
            if attribute == "task" and options:
                use(facts, head, f"@{ref}({'=..., '.join(options)}=...)", decorator.line)
            elif attribute == "connect" and head.rpartition(".")[2] in _APP_SIGNALS:
                use(facts, head.rpartition(".")[0], head, decorator.line)
        for cls in facts.classes:
            for base in cls.bases:
                if base.endswith(".Task"):
                    use(facts, base[:-5], f"class {cls.name}({base})", cls.line)
    return used


def _keys(call: Call) -> list[object]:
    """The setting names a `conf.update(...)` call writes."""
    written: list[object] = list(call.kwargs)
    for arg in call.positional:
        if isinstance(arg, dict):
            written += list(arg)
    return written


def _built_by(facts: ModuleFacts, callee: str, symbols: Symbols
              ) -> tuple[ModuleFacts, str, Call] | None:
    """The `Celery(...)` call inside `callee`, when it is a project function that makes one."""
    full = symbols.resolve(facts, callee)
    if full is None:
        return None
    owner, function = symbols.defined[full], full.rsplit(".", 1)[-1]
    return next(((owner, function, call) for _, call in owner.calls_in(function)
                 if call.func
                 and call.func.rsplit(".", 1)[-1] == "Celery"
                 and symbols.qualify(owner, call.func).startswith("celery")), None)


def read_settings(root: Path, modules: list[ModuleFacts], symbols: Symbols) -> CelerySettings:
    """The configuration found in `modules`, and the broker facts it implies."""
    found: list[SettingValue] = []
    made = celery_apps(modules, symbols)
    apps = {a.name for a in made}
    # What a factory sets on the app it builds is the settings of the app it is bound to.
    factories = {a.factory: a.name for a in made if a.factory}

    def app_of(facts: ModuleFacts, ref: str | None, function: str | None) -> str | None:
        """The app a setting configures; an unknown app configured inside a function (a
        factory, a test fixture) is that function's own, so it leaks to no other task."""
        full = symbols.resolve(facts, ref) if ref else None
        if full in apps:
            return full
        key = f"{facts.module}:{function}()" if function else None
        return factories.get(key, key) if key else None

    def add(key: str, written: str, value: object, facts: ModuleFacts, line: int,
            app: str | None) -> None:
        found.append(SettingValue(key, written, value, Location(facts.path, line), app))

    config_modules: dict[str, str | None] = {}   # module named by config_from_object -> app
    django_apps: set[str | None] = set()          # apps reading "django.conf:settings"
    for created in made:
        for key, value in created.options.items():
            name = {"broker": "broker_url", "backend": "result_backend"}.get(key, key)
            if name != "main":
                found.append(SettingValue(name, f"Celery({key}=...)", value, created.built_at,
                                          created.name))
    for facts in modules:
        for call in facts.calls:
            if call.method == "update" and (call.base or "").endswith(".conf"):
                owner = app_of(facts, (call.base or "")[:-5], call.function)
                for arg in call.positional:
                    if isinstance(arg, dict):
                        for key, value in arg.items():
                            add(str(key), str(key), value, facts, call.line, owner)
                for key, value in call.kwargs.items():
                    add(key, key, value, facts, call.line, owner)
            if call.method == "config_from_object" and call.positional:
                owner = app_of(facts, call.base, call.function)
                target = call.positional[0]
                if isinstance(target, str) and ":" in target:
                    django_apps.add(owner)
                for module in _config_targets(facts, target, symbols, found, owner):
                    config_modules[module] = owner
        for write in facts.conf_writes:
            add(write.key, f"{write.app}.conf.{write.key}", write.value, facts, write.line,
                app_of(facts, write.app, write.function))
    # Django settings configure the app that reads them, when exactly one does.
    django_app = next(iter(django_apps)) if len(django_apps) == 1 else None
    read_from, alternatives, chosen = _django_settings(modules, symbols, set(config_modules))
    for facts in modules:
        if facts.path in alternatives:
            continue
        celeryconfig = (facts.module.rsplit(".", 1)[-1] == "celeryconfig"
                        or facts.module in config_modules)
        # the module the app reads is its settings whatever its name (envs/production.py)
        settings_like = celeryconfig or _settings_like(facts) or facts.module in chosen
        owner = config_modules.get(facts.module, django_app)
        for assignment in facts.assignments:
            if settings_like and _SETTING_NAME.match(assignment.name):
                add(_modern(assignment.name), assignment.name, assignment.value, facts,
                    assignment.line, owner)
            elif celeryconfig and assignment.name.islower() and not assignment.name.startswith("_"):
                add(assignment.name, assignment.name, assignment.value, facts, assignment.line,
                    owner)
        # Settings kept as a class's attributes (django-configurations' `class Base(Settings)`).
        for cls in facts.classes if settings_like else ():
            for name, value in cls.attrs.items():
                if _SETTING_NAME.match(name):
                    add(_modern(name), f"{cls.name}.{name}", value, facts,
                        cls.attr_lines.get(name, cls.line), owner)
    consumer, consumer_at = _consumer_timeout(root)
    return _derive(tuple(found), consumer, consumer_at, read_from, tuple(alternatives))


def _settings_like(facts: ModuleFacts) -> bool:
    return any(_SETTINGS_MODULE.search(part) for part in facts.module.split("."))


def _sets_celery(facts: ModuleFacts) -> bool:
    return any(_SETTING_NAME.match(a.name) for a in facts.assignments) or any(
        _SETTING_NAME.match(name) for cls in facts.classes for name in cls.attrs)


_TEMPLATE = re.compile(r"(^|_)(example|sample|template|default|dist)($|_)")
_TEST_SETTINGS = re.compile(r"(^|_)(tests?|testing|ci)($|_)")


def _django_settings(modules: list[ModuleFacts], symbols: Symbols,
                     named: set[str]) -> tuple[str | None, list[str], set[str]]:
    """Which of several Django settings modules the app reads, the others (paths), and the
    modules read (the chosen one with those it star-imports, whatever their names).

    A project may keep alternatives side by side (Weblate: settings_example.py,
    settings_docker.py, settings_test.py); merged, the first value of each setting won
    whichever file it came from. The module read is the one `DJANGO_SETTINGS_MODULE`
    defaults to (`os.environ.setdefault(...)`, the app's own module's first), with the
    modules it star-imports (`from .base import *`). When that module is not in the code
    (made at install from a template: Weblate's `weblate.settings` from
    settings_example.py), the template is read, named so (example, sample, template,
    default, dist). A module `config_from_object` names is read as well. Test settings are
    never the app's. When none of these tells, every settings module is read as before."""
    candidates = [m for m in modules if m.module not in named and _settings_like(m)
                  and _sets_celery(m) and not any(  # the app's own module (celeryconf.py)
                      c.method in ("config_from_object", "autodiscover_tasks") for c in m.calls)]
    defaults = [(facts, call) for facts in modules for _, call in facts.calls_in(None)
                if call.method == "setdefault" and (call.base or "").endswith("environ")
                and call.positional[:1] == ["DJANGO_SETTINGS_MODULE"]
                and len(call.positional) > 1 and isinstance(call.positional[1], str)]
    defaults.sort(key=lambda d: not any(c.method == "config_from_object"
                                        for c in d[0].calls))
    chosen: ModuleFacts | None = None
    why = ""
    if defaults:
        facts, call = defaults[0]
        name = str(call.positional[1])
        chosen = symbols.module(name)
        why = f"DJANGO_SETTINGS_MODULE defaults to {name} at {facts.path}:{call.line}"
        if chosen is None:
            template = next((m for m in candidates
                             if _TEMPLATE.search(m.module.rsplit(".", 1)[-1])), None)
            if template is not None:
                chosen = template
                why = (f"{why}, which is not in the code: read from its template "
                       f"{template.path}")
    if len(candidates) < 2:  # nothing to choose between: every settings module is read
        return None, [], _star_imported(chosen, symbols) if chosen is not None else set()
    if chosen is None:
        tests = [m for m in candidates if _TEST_SETTINGS.search(m.module.rsplit(".", 1)[-1])]
        return None, [m.path for m in tests] if len(tests) < len(candidates) else [], set()
    read = _star_imported(chosen, symbols)
    return (f"{chosen.path} ({why})" if chosen.path not in why else why,
            [m.path for m in candidates if m.module not in read], read)


def _star_imported(facts: ModuleFacts, symbols: Symbols) -> set[str]:
    """A settings module and those it star-imports, to a fixed point (`from .base import *`)."""
    read, todo = {facts.module}, [facts]
    while todo:
        for source, _ in todo.pop().star_imports:
            module = symbols.module(source) if source else None
            if module is not None and module.module not in read:
                read.add(module.module)
                todo.append(module)
    return read


def _config_targets(facts: ModuleFacts, target: object, symbols: Symbols,
                    found: list[SettingValue], app: str | None) -> set[str]:
    """Modules named by `config_from_object("x.y")`; a class named by reference is read now."""
    if isinstance(target, str) and ":" not in target:
        module = symbols.module(target)
        return {module.module} if module else set()
    if isinstance(target, Ref) and (full := symbols.resolve(facts, target.dotted)):
        owner = symbols.defined[full]
        for cls in owner.classes:
            if f"{owner.module}.{cls.name}".lstrip(".") == full or cls.name == full:
                for key, value in cls.attrs.items():
                    if key.islower():
                        found.append(SettingValue(key, f"{cls.name}.{key}", value,
                                                  Location(owner.path, cls.line), app))
    return set()


def _modern(name: str) -> str:
    """`CELERY_TASK_ACKS_LATE` -> `task_acks_late`; old `CELERY_ACKS_LATE` too."""
    if name.startswith("BROKER_"):
        return name.lower()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            key = name[len(prefix):].lower()
            if prefix == "CELERYBEAT_":
                return f"beat_{key}"
            return f"task_{key}" if key in _TASK_SETTINGS else key
    return name.lower()


def _derive(values: tuple[SettingValue, ...], consumer: float,
            consumer_at: Location | None, read_from: str | None = None,
            alternatives: tuple[str, ...] = ()) -> CelerySettings:
    """The broker facts the values imply (the first value of each setting wins)."""
    first: dict[str, SettingValue] = {}
    for value in values:
        first.setdefault(value.key, value)
    broker = _broker(first.get("broker_url"))
    visibility, visibility_at = DEFAULT_VISIBILITY_TIMEOUT, None
    options = first.get("broker_transport_options")
    if options is not None and isinstance(options.value, dict):
        timeout = seconds(options.value.get("visibility_timeout"))
        if timeout is not None:
            visibility, visibility_at = timeout, options.location
    return CelerySettings(values, broker, visibility, visibility_at, consumer, consumer_at,
                          read_from, alternatives)


def _broker(setting: SettingValue | None) -> Broker:
    if setting is None:
        return "unknown"
    url = setting.value.default if isinstance(setting.value, FromEnv) else setting.value
    if not isinstance(url, str):
        return "unknown"
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "sentinel", "redis+socket"):
        return "redis"
    if scheme in ("amqp", "amqps", "pyamqp", "librabbitmq"):
        return "rabbitmq"
    return "other"


# Where a deployment sets RabbitMQ's consumer_timeout (milliseconds): rabbitmq.conf
# (`consumer_timeout = 7200000`), advanced.config (`{consumer_timeout, 7200000}`), or the
# server's Erlang arguments in a compose or env file
# (`RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-rabbit consumer_timeout 7200000`).
_CONSUMER_TIMEOUT = {
    "rabbitmq.conf": re.compile(r"^\s*consumer_timeout\s*=\s*(\d+)\s*$"),
    "advanced.config": re.compile(r"\{\s*consumer_timeout\s*,\s*(\d+)\s*\}"),
}
_ERL_ARGS = re.compile(r"-rabbit\s+consumer_timeout\s+(\d+)")
_DEPLOY_FILES = (".yml", ".yaml", ".env")


def _consumer_timeout(root: Path) -> tuple[float, Location | None]:
    """RabbitMQ's consumer_timeout, from the first deployment file in the codebase that
    sets it (rabbitmq.conf, advanced.config, a compose or env file)."""
    if root.is_file():
        return DEFAULT_CONSUMER_TIMEOUT, None
    for path in files(root, (*_CONSUMER_TIMEOUT, *_DEPLOY_FILES)):
        pattern = _CONSUMER_TIMEOUT.get(path.name, _ERL_ARGS)
        if pattern is _ERL_ARGS and not path.name.endswith(_DEPLOY_FILES):
            continue  # `myrabbitmq.conf`: not RabbitMQ's own file
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if match := pattern.search(line):
                relative = path.relative_to(root).as_posix()
                return int(match.group(1)) / 1000.0, Location(relative, number)
    return DEFAULT_CONSUMER_TIMEOUT, None
