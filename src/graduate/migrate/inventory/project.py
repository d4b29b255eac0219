"""The linked picture of a codebase: its tasks, how they start each other, and the
facts around them; and the external calls a function makes (its effects).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from graduate.migrate.inventory.config import CelerySettings
from graduate.migrate.inventory.model import Finding, FindingKind, Location, Skipped
from graduate.migrate.inventory.reader import ModuleFacts, StatusWrite
from graduate.migrate.inventory.symbols import Symbols
from graduate.migrate.inventory.values import FromEnv, Ref, Schedule, Unknown

CELERY_METHODS = frozenset({"delay", "apply_async", "s", "si", "signature", "retry",
                             "send_task", "apply"})
# Libraries whose calls are not external commitments of the team's own.
_NOT_EFFECTS = frozenset({"celery", "kombu", "django", "flask", "temporalio", "langgraph",
                          "graduate", "langchain_core", "structlog", "sentry_sdk", "pydantic",
                          "opentelemetry",  # tracing, as sentry_sdk and structlog log
                          "attrs", "typing_extensions", "sqlalchemy"}
                         ) | frozenset(sys.stdlib_module_names)
# Libraries whose every call computes a value from its arguments, in memory or in the
# worker's own scratch files: they talk to no other system, so a task calling them
# crosses none (pretix's `unidecode(name)`, `vobject`, babel's `format_currency`;
# Weblate's `siphash`, `ruamel.yaml`; bookwyrm's preview images drawn with Pillow,
# `bidi` and `arabic_reshaper`, its requests signed with pycryptodome). Only libraries
# of that kind are listed (transliteration, slugs, number and date formatting,
# in-memory (de)serialisation, hashing, signing, markup sanitising, image and PDF
# drawing, in-process context); any library not listed is a system, since missing one
# is worse than naming one too many. A parser that can also fetch a URL (lxml) is not.
PURE_LIBRARIES = frozenset({
    "text_unidecode", "unidecode", "slugify", "inflection", "inflect", "num2words",
    "humanize", "babel", "dateutil", "pytz", "arrow", "pendulum", "phonenumbers",
    "i18nfield", "vobject", "icalendar", "bleach", "nh3", "markdown", "markdown2", "mistune",
    "markupsafe", "html2text", "emoji", "regex", "ruamel", "yaml", "orjson", "ujson",
    "simplejson", "msgpack", "siphashc", "xxhash", "mmh3", "hashids", "shortuuid", "ulid",
    "jsonschema", "packaging", "semver", "django_scopes", "bidi", "arabic_reshaper", "bs4",
    "flask_babel", "marshmallow",
    "PIL", "colorthief", "pypdf", "PyPDF2", "reportlab", "qrcode", "Crypto", "Cryptodome",
    "cryptography", "nacl", "jwt", "itsdangerous", "bcrypt", "argon2", "passlib",
    # GraphQL executed in process (saleor builds its webhook payloads so): the resolvers'
    # own calls are read where they are written.
    "graphene", "graphql", "graphql_relay", "promise"})
_NO_SYSTEM = _NOT_EFFECTS | PURE_LIBRARIES
_REACH_DEPTH = 3
# How a launch runs a task in its caller's process (`notify(x)`, `notify.apply()`).
INLINE = "called inline (in the caller's process, not queued)"
# Modules of the standard library and Django that talk to another system (mail, sockets,
# HTTP, other processes): a project helper calling them is a client, though the calls
# themselves are not counted as the team's own commitments.
_TALKS_OUT = ("smtplib", "socket", "ssl", "http.client", "urllib.request", "ftplib",
              "imaplib", "poplib", "subprocess", "django.core.mail")


_Entry = TypeVar("_Entry", bound="tuple[Any, ...] | Launch")


@dataclass
class Task:
    name: str                     # the Celery task name
    short: str                    # the function or class name
    function: str                 # qualified definition
    facts: ModuleFacts
    bodies: tuple[str, ...]       # qualnames in the module whose calls are the task's
    failure_bodies: list[tuple[ModuleFacts, str]]
    location: Location
    options: dict[str, object]
    declared: str
    idempotent: bool
    origins: dict[str, Location] = field(default_factory=dict)  # where each option is set
    app: str | None = None        # `@app.task`: the app; `@shared_task`: whichever runs it
    # The function that claims the task's row, and where the claim holds
    # (`Function.claimed_at`); None when none does.
    claim: tuple[str, int] | None = None

    def origin(self, key: str) -> Location:
        return self.origins.get(key, self.location)


@dataclass
class Launch:
    task: Task
    location: Location
    how: str
    delay: float | None           # countdown or ETA offset, seconds
    caller: Task | None
    unknown_delay: str | None = None  # a countdown or ETA written but not known statically


@dataclass
class Project:
    root: Path
    symbols: Symbols
    settings: CelerySettings
    tasks: list[Task] = field(default_factory=list)
    launches: list[Launch] = field(default_factory=list)
    retries: list[tuple[Task, float | None, Location]] = field(default_factory=list)
    edges: list[tuple[Task, Task, Location]] = field(default_factory=list)
    error_edges: list[tuple[Task, Task, Location]] = field(default_factory=list)
    together: list[list[Task]] = field(default_factory=list)
    scheduled: list[tuple[Task, float | None, Location]] = field(default_factory=list)
    status_writes: list[tuple[Task, StatusWrite, Location]] = field(default_factory=list)
    sweeps: list[tuple[Task, StatusWrite, Location]] = field(default_factory=list)
    compensations: list[tuple[Task, str, Location, str]] = field(default_factory=list)
    # a workflow's step (label, module, qualified name in it, where), e.g. an activity
    workflows: list[tuple[str, ModuleFacts, str, Location]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    _indexed: int = field(default=-1, repr=False)
    _indexes: tuple[dict[str, Task], dict[tuple[int, str], Task], dict[str, Task]] = field(
        default=({}, {}, {}), repr=False)
    # each list asked of: (the list itself, its length then, its index by task); holding
    # the list keeps its id from being given to another while it is cached
    _among: dict[tuple[int, int], tuple[list[Any], int, dict[int, list[int]]]] = field(
        default_factory=dict, repr=False)

    def among(self, entries: list[_Entry], tasks: Iterable[Task], at: int = 0) -> list[_Entry]:
        """The entries of one of the project's lists (`edges`, `status_writes`...: tuples
        whose item `at` is a task; `launches`, by the task launched) that belong to these
        tasks, in the list's order. Each list is indexed by task once: asking every entry
        whether it is one of a flow's made scoring quadratic in the codebase's tasks."""
        key = (id(entries), at)
        cached = self._among.get(key)
        if cached is None or cached[0] is not entries or cached[1] != len(entries):
            index: dict[int, list[int]] = {}
            for position, entry in enumerate(entries):
                task = entry.task if isinstance(entry, Launch) else entry[at]
                index.setdefault(id(task), []).append(position)
            cached = self._among[key] = (entries, len(entries), index)
        positions = sorted({p for task in tasks for p in cached[2].get(id(task), ())})
        return [entries[p] for p in positions]

    def settings_for(self, task: Task) -> CelerySettings:
        """The settings a task runs with: its app's when the codebase holds several apps."""
        apps = {v.app for v in self.settings.values if v.app}
        if len(apps) <= 1:
            return self.settings
        return self.settings.for_app(task.app)

    def find(self, kind: FindingKind, name: str, location: Location, detail: str = "") -> None:
        self.findings.append(Finding(kind, name, location, detail))

    def task(self, function: str | None) -> Task | None:
        """The task defined as `function` (its qualified name), if it is one."""
        return self._index()[0].get(function) if function else None

    def _index(self) -> tuple[dict[str, Task], dict[tuple[int, str], Task], dict[str, Task]]:
        """The tasks by function, by (module, body) and by name, first of each kept;
        made again when tasks were added (`tasks` grows while they are read)."""
        if self._indexed != len(self.tasks):
            by_function: dict[str, Task] = {}
            by_body: dict[tuple[int, str], Task] = {}
            by_name: dict[str, Task] = {}
            for task in self.tasks:
                by_function.setdefault(task.function, task)
                by_name.setdefault(task.name, task)
                for body in task.bodies:
                    by_body.setdefault((id(task.facts), body), task)
            self._indexes = by_function, by_body, by_name
            self._indexed = len(self.tasks)
        return self._indexes

    def task_named(self, name: str) -> Task | None:
        """A task by its Celery name; names written against another root match by suffix."""
        if (found := self._index()[2].get(name)) is not None:
            return found
        suffix = [t for t in self.tasks
                  if t.name.endswith(f".{name}") or name.endswith(f".{t.name}")]
        if len(suffix) == 1:
            return suffix[0]
        short = [t for t in self.tasks if t.short == name.rsplit(".", 1)[-1]]
        return short[0] if len(short) == 1 else None

    def task_of_body(self, facts: ModuleFacts, qualname: str | None) -> Task | None:
        if qualname is None:
            return None
        return self._index()[1].get((id(facts), qualname))

    def claims_first(self, task: Task) -> bool:
        """Whether the task claims its row before any call out: a redelivered message
        finds the row claimed and does nothing (`Function.claimed_at`)."""
        if task.claim is None:
            return False
        function, claimed_at = task.claim
        return next(self.effects(task.facts, function, before=claimed_at), None) is None

    def effects(self, facts: ModuleFacts, qualname: str, depth: int = 0,
                origin: ModuleFacts | None = None, *,
                before: int | None = None) -> Iterator[tuple[str, Location, int]]:
        """External calls a function makes, directly or through the project's functions:
        (qualified callee, where, depth). A function passed to a helper
        (`call_with_retry(crm.create_draft, ...)`) counts as called; the helpers of the
        function's own module are looked through, not reported. A context a `with` enters
        and names nothing (`with scopes_disabled():`, `with language(locale):`) sets up
        how the task runs and commits nothing; one it keeps (`with httpx.Client() as
        client:`) is a client, and a library's object built (`Client(sid, token)`) may
        be one too, so both count."""
        origin = origin or facts
        function = facts.function(qualname)
        bound = function.bound if function is not None else set()
        for index, call in facts.calls_in(qualname):
            if before is not None and index >= before:
                break  # `before`: only the calls made before it
            if not call.func or call.method in CELERY_METHODS or call.context:
                continue
            where = Location(facts.path, call.line)
            refs = [call.func, *(a.dotted for a in call.positional if isinstance(a, Ref))]
            for ref in refs:
                if ref.partition(".")[0] in bound:
                    continue  # the function's own object, named like an import
                yield from self._callee(facts, ref, where, depth, origin, ref is call.func)

    def _callee(self, facts: ModuleFacts, ref: str, where: Location, depth: int,
                origin: ModuleFacts, called: bool) -> Iterator[tuple[str, Location, int]]:
        defined = self.symbols.resolve(facts, ref)
        if defined is not None:
            owner = self.symbols.defined[defined]
            name = defined.rsplit(".", 1)[-1]
            if self.task(defined) is not None or owner.function(name) is None:
                return
            reached = list(self.effects(owner, name, depth + 1, origin)
                           ) if depth < _REACH_DEPTH else []
            if owner is not origin and (reached or self._client(owner, name)):
                yield defined, where, depth
            elif owner is origin:
                # A helper beside the task is looked through: its own calls out are the
                # task's (bookwyrm's broadcast_task posts through async_broadcast beside
                # it); what it reaches through other modules stays deeper.
                reached = [(c, w, depth if d == depth + 1 else d) for c, w, d in reached]
            yield from reached
            return
        if called and (made := self._held_client(facts, ref.partition(".")[0])):
            yield made, where, depth  # `_client.crm.create(...)` on `_client = Lib(...)`
            return
        if ref.partition(".")[0] not in facts.imports or (not called and "." not in ref):
            return  # a local name, or an imported value passed along (not a call target)
        qualified = self.symbols.qualify(facts, ref)
        if qualified.split(".")[0] not in _NO_SYSTEM and (
                not self.symbols.is_project(qualified)):
            yield qualified, where, depth


    def _held_client(self, facts: ModuleFacts, name: str) -> str | None:
        """What made the module-level object `name`, when a library's call did
        (`_client = hubspot.HubSpot(...)`, `s3 = boto3.client("s3")`): a call through it
        reaches that library's system. None for anything else (an import, the project's
        own object, a logger or another object of the standard library)."""
        if name in facts.imports:
            return None
        factory = next((a.factory for a in facts.apps if a.var == name and a.factory), None)
        if factory is None or factory.partition(".")[0] not in facts.imports:
            return None
        made = self.symbols.qualify(facts, factory)
        if made.split(".")[0] in _NO_SYSTEM or self.symbols.is_project(made):
            return None
        return made

    def _client(self, facts: ModuleFacts, qualname: str, depth: int = 0) -> bool:
        """Whether a project function that reaches no outside call is itself a client of
        a system: one that calls no library (a client whose body is not shown), or one
        that talks out through the standard library or Django (`smtplib`, `socket`,
        `django.core.mail`). A helper computing a value (`data_dir()`, `round_decimal()`),
        logging an error or only calling other such helpers, of its own module too
        (saleor's `from_global_id_or_none` calling `from_global_id_or_error`), is none."""
        calls = [call.func for _, call in facts.calls_in(qualname) if call.func]
        imported = [self.symbols.qualify(facts, func) for func in calls
                    if func.partition(".")[0] in facts.imports]
        if imported:
            return any(name == module or name.startswith(f"{module}.")
                       for name in imported for module in _TALKS_OUT)
        own = [func for func in calls
               if "." not in func and func != qualname and facts.function(func) is not None]
        if own and depth < _REACH_DEPTH:
            return any(self._client(facts, name, depth + 1) for name in own)
        return True


def reached(entries: Sequence[Task], onward: Mapping[int, Sequence[Task]]
            ) -> tuple[list[Task], int]:
    """The tasks reached from `entries` along `onward` (what each task, by id, starts or
    leads to), each once, breadth first in the order started, and how many tasks the
    longest of these shortest hand-offs runs through."""
    order, level = list(entries), {id(t): 1 for t in entries}
    for task in order:
        for after in onward.get(id(task), ()):
            if id(after) not in level:
                level[id(after)] = level[id(task)] + 1
                order.append(after)
    return order, max(level.values(), default=0)


def text(value: object) -> str:
    """A value as the code wrote it, for reports."""
    if isinstance(value, Ref | Unknown | Schedule | FromEnv):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {text(v)}" for k, v in value.items()) + "}"
    return repr(value)


def kwargs_text(kwargs: dict[str, object]) -> str:
    return ", ".join(f"{k}={text(v)}" for k, v in kwargs.items())
