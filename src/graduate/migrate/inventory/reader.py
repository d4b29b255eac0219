"""Read one module's syntax tree into raw facts, before names are resolved across modules.

The reader records what is written (a decorator `app.task(bind=True)`, a call
`charge.apply_async(countdown=7200)`, a canvas `chain(a.s(), b.s())`) with its line;
`project.py` then decides, across every module, which names are tasks and apps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import libcst as cst

from graduate.migrate.inventory.positions import layout, walk
from graduate.migrate.inventory.values import Ref, code, dotted, evaluate, offset_seconds

# Attribute names that hold a row's place in a hand-made state machine.
STATE_FIELDS = frozenset({"status", "state", "stage", "phase"})
_QUERY_METHODS = frozenset({"filter", "exclude", "filter_by", "where", "get"})
_CANVAS = frozenset({"chain", "group", "chord"})
_LAUNCH = frozenset({"delay", "apply_async"})
_SIGNATURE_METHODS = frozenset({"s", "si", "signature", "subtask"})
_SIGNATURE_FUNCTIONS = frozenset({"signature", "subtask", "Signature"})
_ROW_LOCKS = frozenset({"select_for_update", "with_for_update"})  # Django, SQLAlchemy
# What opens a transaction a `with` statement holds: Django's, SQLAlchemy's.
_TRANSACTIONS = frozenset({"atomic", "begin", "begin_nested"})
_CELERY_CLASSES = frozenset({"celery.Celery", "celery.app.Celery", "celery.app.base.Celery"})
_IDEMPOTENCY = re.compile(r"idempot|dedup", re.IGNORECASE)
_SQL_SET = re.compile(r"\bUPDATE\s+(\w+)\s+SET\s+(?:[^;]*?,\s*)?(status|state|stage|phase)\s*=\s*"
                      r"('[^']*'|\?|%s|:\w+)", re.IGNORECASE)
_SQL_WHERE = re.compile(r"\bFROM\s+(\w+)\b[^;]*?\bWHERE\b[^;]*?\b(status|state|stage|phase)\s*"
                        r"(?:=|IN)\s*('[^']*'|\([^)]*\))", re.IGNORECASE)


@dataclass
class Sig:
    """One task in a canvas: by reference (`charge.s()`) or by name (`signature("x")`)."""

    ref: str | None
    name: str | None
    line: int
    text: str
    dynamic: bool = False         # `signature(variable)`: the name is known only at run time


@dataclass
class Canvas:
    kind: Literal["sig", "chain", "group", "chord"]
    line: int
    sig: Sig | None = None
    parts: list[Canvas] = field(default_factory=list)
    body: Canvas | None = None
    errors: list[Sig] = field(default_factory=list)
    launch: dict[str, object] = field(default_factory=dict)  # countdown and eta, as written
    launched_at: int | None = None
    eta_seconds: float | None = None

    def sigs(self) -> list[Sig]:
        found = [self.sig] if self.sig else []
        for part in self.parts:
            found += part.sigs()
        if self.body:
            found += self.body.sigs()
        return found


@dataclass
class Call:
    func: str | None              # the dotted callee as written, e.g. "charge.apply_async"
    method: str | None            # the last attribute, e.g. "apply_async"
    base: str | None              # what the method is called on, e.g. "charge"
    table: str | None             # TABLE in TABLE[key].delay() or TABLE.get(key).delay()
    positional: list[object]
    kwargs: dict[str, object]
    line: int
    function: str | None          # the enclosing function ("f" or "Class.method")
    in_except: bool
    eta_seconds: float | None = None
    # `.delay()` on an expression that is neither a name nor a table lookup
    # (`getattr(module, name).delay()`): the task is known only at run time.
    dynamic_base: str | None = None
    context: bool = False         # `with language(locale):`: enters a context it names not


@dataclass
class Decorator:
    ref: str | None
    kwargs: dict[str, object]
    called: bool
    line: int


@dataclass
class Registration:
    """A task made by calling a decorator: `app.task(name=X)(run_step)`, `shared_task(f)`."""

    decorator: Decorator
    target: str
    inside: str | None = None  # the function it is made in (qualified), if any


@dataclass
class Function:
    name: str
    qualname: str                 # "f" or "Class.method"
    line: int
    decorators: list[Decorator]
    idempotent: bool              # names an idempotency key or dedup somewhere in it
    # Names the function binds itself (parameters, assignments, loop and `with` targets):
    # `request` there is its own object, not the module's `request` import.
    bound: set[str] = field(default_factory=set)
    # Claims its row before working: a locked read (`select_for_update()`) that checks the
    # row's state and moves it on, or `filter(status=A).update(status=B)`; a redelivered
    # message finds the row claimed and does nothing. The claim holds from this index of
    # the module's `calls` on (its state write, or the end of the transaction around it:
    # until then a crash rolls it back); None when the function claims nothing.
    claimed_at: int | None = None
    # A task made inside a function (`def register(app): @app.task def x(): ...`, or
    # `app.task(x)` there): the function it is made in, whose parameters its decorator
    # may name (`sender` of an `on_after_configure` handler). Its qualname is its own
    # name, as Celery names the task (`module.x`).
    nested_in: str | None = None


@dataclass
class ClassDef:
    name: str
    line: int
    bases: list[str]
    attrs: dict[str, object]
    methods: list[str]
    state_fields: list[tuple[str, int]]
    attr_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class StatusWrite:
    field: str
    value: str
    line: int
    function: str


@dataclass
class Assignment:
    name: str
    value: object
    line: int


@dataclass
class BeatEntry:
    name: str
    task: object                  # a task name (str), or a Ref from add_periodic_task
    schedule: object
    line: int
    # `@x.periodic_task(run_every=...)` on the function: an entry only if x makes Celery
    # tasks (the function is a task), since other libraries name a decorator so too.
    decorates: bool = False


@dataclass
class App:
    var: str
    line: int
    kwargs: dict[str, object]
    # `app = create_app()`: the function called, which is an app only if it builds one
    # (`config.celery_apps` decides); None for Celery's own class (`Celery(...)`,
    # `celery.Celery(...)`), however imported.
    factory: str | None = None


@dataclass
class ConfWrite:
    app: str
    key: str
    value: object
    line: int
    function: str | None = None


@dataclass
class ModuleFacts:
    module: str
    path: str
    imports: dict[str, str] = field(default_factory=dict)
    star_imports: list[tuple[str, int]] = field(default_factory=list)
    apps: list[App] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    classes: list[ClassDef] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    canvases: list[tuple[Canvas, str | None]] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    conf_writes: list[ConfWrite] = field(default_factory=list)
    beat: list[BeatEntry] = field(default_factory=list)
    status_writes: list[StatusWrite] = field(default_factory=list)
    state_queries: list[StatusWrite] = field(default_factory=list)
    tables: list[tuple[str, dict[str, str], int]] = field(default_factory=list)
    registrations: list[Registration] = field(default_factory=list)
    # Built on first use, once the module is read: each function's calls (with their
    # index in `calls`) and each function by its qualified name. Scanning `calls` for
    # one function's made reading a module quadratic in its functions.
    _by_function: dict[str | None, list[tuple[int, Call]]] | None = field(
        default=None, repr=False, compare=False)
    _by_qualname: dict[str, Function] | None = field(default=None, repr=False, compare=False)

    def calls_in(self, function: str | None) -> list[tuple[int, Call]]:
        """The calls made in `function` (its qualified name), each with its index in
        `calls`, in the order written."""
        if self._by_function is None:
            self._by_function = {}
            for index, call in enumerate(self.calls):
                self._by_function.setdefault(call.function, []).append((index, call))
        return self._by_function.get(function, [])

    def function(self, qualname: str) -> Function | None:
        """The function or method defined as `qualname` (the first, if defined twice)."""
        if self._by_qualname is None:
            self._by_qualname = {}
            for function in self.functions:
                self._by_qualname.setdefault(function.qualname, function)
        return self._by_qualname.get(qualname)


def read_module(tree: cst.Module, module: str, path: str, *, package: bool) -> ModuleFacts:
    """The raw facts of one parsed module."""
    facts = ModuleFacts(module=module, path=path)
    constants = _constants(tree)
    written = layout(tree)
    walk(tree, _Reader(facts, constants, package, written.lines), written)
    return facts


def _constants(tree: cst.Module) -> dict[str, object]:
    """Module-level names bound to values that can be known (`ONE_DAY = 24 * 3600`)."""
    constants: dict[str, object] = {}
    for statement in tree.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            target, value = _simple_assignment(small)
            if target and value is not None:
                constants[target] = evaluate(value, constants)
    return constants


def _simple_assignment(node: cst.CSTNode) -> tuple[str | None, cst.BaseExpression | None]:
    if (isinstance(node, cst.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0].target, cst.Name)):
        return node.targets[0].target.value, node.value
    if isinstance(node, cst.AnnAssign) and isinstance(node.target, cst.Name) and node.value:
        return node.target.value, node.value
    return None, None


@dataclass(frozen=True)
class _ReaderState:
    """The enclosing function's state, kept while a task made inside it is read."""

    function: str | None
    function_node: cst.FunctionDef | None
    current: Function | None
    local_canvases: dict[str, Canvas]
    local_lists: dict[str, list[Canvas]]
    local_values: dict[str, cst.BaseExpression]
    checks_state: bool
    state_written_at: int | None
    write_pending: bool
    calls_from: int
    writes_from: int
    queries_from: int
    except_depth: int
    transactions: list[bool]


_TASK_MAKERS = frozenset({"task", "shared_task", "periodic_task"})


def makes_tasks(callee: str | None) -> bool:
    """Whether a callee's name is one a task decorator has (`app.task`, `shared_task`)."""
    return (callee or "").rsplit(".", 1)[-1] in _TASK_MAKERS


class _RegisteredNames(cst.CSTVisitor):
    """The names a function body hands to a task decorator: `app.task(fn)`,
    `app.task(name=...)(fn)`, `shared_task(fn)`."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.returned: set[int] = set()

    def visit_Return(self, node: cst.Return) -> None:
        # `return shared_task(**options)(wrapper)`: a decorator of the project's own,
        # whose wrapper is made a task only when the decorator is used.
        if node.value is not None:
            self.returned.add(id(node.value))

    def visit_Call(self, node: cst.Call) -> None:
        if id(node) in self.returned:
            return
        positional = [a.value for a in node.args if a.keyword is None and not a.star]
        if len(positional) != 1 or not isinstance(positional[0], cst.Name):
            return
        maker = node.func.func if isinstance(node.func, cst.Call) else node.func
        if makes_tasks(dotted(maker)):
            self.names.add(positional[0].value)


class _Reader(cst.CSTVisitor):
    def __init__(self, facts: ModuleFacts, constants: dict[str, object], package: bool,
                 lines: Mapping[cst.CSTNode, int]) -> None:
        super().__init__()
        self.facts = facts
        self.lines = lines  # where each node starts
        self.constants = constants
        self.package = package
        self.function: str | None = None
        self.function_node: cst.FunctionDef | None = None
        self.current: Function | None = None
        self.def_depth = 0  # every def entered, read or not (methods of nested classes)
        self.classes: list[str] = []
        self.except_depth = 0
        self.local_canvases: dict[str, Canvas] = {}
        # Lists of signatures a function builds for a group or chain (`tasks.append(x.s())`).
        self.local_lists: dict[str, list[Canvas]] = {}
        self.local_values: dict[str, cst.BaseExpression] = {}
        self.context_calls: set[int] = set()  # ids of the calls `with` statements enter
        self.checks_state = False  # the current function compares a row's state
        # Where the current function's first state write is done (an index of
        # `facts.calls`), and whether it waits for the transaction around it to end.
        self.state_written_at: int | None = None
        self.write_pending = False
        self.transactions: list[bool] = []  # for each `with` entered: opens a transaction
        self.calls_from = self.writes_from = self.queries_from = 0
        # The enclosing functions' state while a task made inside one is read.
        self.saved: list[_ReaderState] = []
        # Names the outermost function hands to a task decorator (`app.task(fn)`), found
        # when a function defined inside it is first met.
        self.registered_inside: set[str] | None = None

    def line(self, node: cst.CSTNode) -> int:
        return self.lines[node]

    def value(self, expr: cst.BaseExpression) -> object:
        return evaluate(expr, self.constants)

    # -- imports -----------------------------------------------------------------------

    def visit_Import(self, node: cst.Import) -> bool:
        for alias in node.names:
            name = dotted(alias.name) or ""
            if alias.asname and isinstance(alias.asname.name, cst.Name):
                self.facts.imports[alias.asname.name.value] = name
            else:
                self.facts.imports[name.split(".")[0]] = name.split(".")[0]
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        source = self._absolute(node)
        if isinstance(node.names, cst.ImportStar):
            self.facts.star_imports.append((source, self.line(node)))
            return False
        for alias in node.names:
            name = dotted(alias.name) or ""
            local = (alias.asname.name.value
                     if alias.asname and isinstance(alias.asname.name, cst.Name) else name)
            self.facts.imports[local] = f"{source}.{name}" if source else name
        return False

    def _absolute(self, node: cst.ImportFrom) -> str:
        written = dotted(node.module) if node.module else ""
        dots = len(node.relative)
        if not dots:
            return written or ""
        parts = self.facts.module.split(".") if self.facts.module else []
        keep = len(parts) - dots + (1 if self.package else 0)
        base = ".".join(parts[:max(keep, 0)])
        return ".".join(p for p in (base, written) if p)

    # -- definitions -------------------------------------------------------------------

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self.def_depth += 1
        nested_in = None
        if self.function is not None:
            if not self._makes_task(node):
                return True  # a nested function: its calls belong to the enclosing one
            # A task made inside a function: its calls are its own, not the maker's.
            nested_in = self.function
            self.saved.append(self._state())
            # Its body runs later, in no `with` or `except` of the function making it.
            self.except_depth, self.transactions = 0, []
            # Qualified as Python does, so that two factories each making a `run` keep
            # their own calls; its Celery name is the module's (or `name=`), see tasks.py.
            qualname = f"{self.function}.<locals>.{node.name.value}"
        else:
            qualname = ".".join([*self.classes, node.name.value])
            if len(self.classes) > 1:
                return True
            self.registered_inside = None
        self.function, self.function_node = qualname, node
        self.current = Function(
            name=node.name.value, qualname=qualname, line=self.line(node.name),
            decorators=[self._decorator(d) for d in node.decorators], idempotent=False,
            nested_in=nested_in)
        for decorator in self.current.decorators:
            # `@app.periodic_task(run_every=crontab(...))`: Celery 3's decorator, kept
            # by apps of their own (indico's): a task and its beat entry in one.
            if (decorator.ref or "").rsplit(".", 1)[-1] == "periodic_task" and (
                    "run_every" in decorator.kwargs):
                name = decorator.kwargs.get("name")
                ref = node.name.value if nested_in else qualname  # the module's name
                self.facts.beat.append(BeatEntry(
                    name if isinstance(name, str) else ref, Ref(ref),
                    decorator.kwargs["run_every"], decorator.line, decorates=True))
        params = node.params
        self.current.bound.update(
            p.name.value for p in (*params.posonly_params, *params.params,
                                   *params.kwonly_params))
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                self.current.bound.add(star.name.value)
        self.facts.functions.append(self.current)
        self.local_canvases = {}
        self.local_lists = {}
        self.local_values = {}
        self.checks_state = False
        self.state_written_at, self.write_pending = None, False
        # What the module held before this function: its own facts come after.
        self.calls_from, self.writes_from, self.queries_from = (
            len(self.facts.calls), len(self.facts.status_writes), len(self.facts.state_queries))
        return True

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self.def_depth -= 1
        if original_node is self.function_node:
            if self.current is not None and self._claims(self.current):
                self.current.claimed_at = self.state_written_at
            self.function, self.function_node, self.current = None, None, None
            if self.saved:  # back in the function the task was made in
                self._restore(self.saved.pop())

    def _makes_task(self, node: cst.FunctionDef) -> bool:
        """Whether a function defined inside the current one is made a task there: it is
        decorated by a `task`, `shared_task` or `periodic_task` decorator, or handed to
        one (`app.task(node)`, `app.task(name=...)(node)`) in the enclosing function."""
        if any(makes_tasks(dotted(d.decorator.func if isinstance(d.decorator, cst.Call)
                                   else d.decorator)) for d in node.decorators):
            return True
        if self.registered_inside is None:
            outermost = self.saved[0].function_node if self.saved else self.function_node
            finder = _RegisteredNames()
            if outermost is not None:
                outermost.body.visit(finder)
            self.registered_inside = finder.names
        return node.name.value in self.registered_inside

    def _state(self) -> _ReaderState:
        return _ReaderState(
            function=self.function, function_node=self.function_node, current=self.current,
            local_canvases=self.local_canvases, local_lists=self.local_lists,
            local_values=self.local_values, checks_state=self.checks_state,
            state_written_at=self.state_written_at, write_pending=self.write_pending,
            calls_from=self.calls_from, writes_from=self.writes_from,
            queries_from=self.queries_from, except_depth=self.except_depth,
            transactions=self.transactions)

    def _restore(self, state: _ReaderState) -> None:
        self.function, self.function_node = state.function, state.function_node
        self.current = state.current
        self.local_canvases, self.local_lists = state.local_canvases, state.local_lists
        self.local_values, self.checks_state = state.local_values, state.checks_state
        self.state_written_at, self.write_pending = state.state_written_at, state.write_pending
        self.calls_from, self.writes_from = state.calls_from, state.writes_from
        self.queries_from, self.except_depth = state.queries_from, state.except_depth
        self.transactions = state.transactions

    def _claims(self, function: Function) -> bool:
        """Whether the function claims its row (see `Function.claimed_at`); a function
        that is one transaction (`@transaction.atomic`) commits its claim only at its end."""
        qualname = function.qualname
        writes = {w.line for w in self.facts.status_writes[self.writes_from:]
                  if w.function == qualname}
        if not writes or self.state_written_at is None or any(
                (d.ref or "").rsplit(".", 1)[-1] in _TRANSACTIONS for d in function.decorators):
            return False
        locks = any(c.function == qualname and c.method in _ROW_LOCKS
                    for c in self.facts.calls[self.calls_from:])
        swapped = any(q.function == qualname and q.line in writes
                      for q in self.facts.state_queries[self.queries_from:])
        return (locks and self.checks_state) or swapped

    def visit_Comparison(self, node: cst.Comparison) -> None:
        if isinstance(node.left, cst.Attribute) and node.left.attr.value in STATE_FIELDS:
            self.checks_state = True

    def visit_Name(self, node: cst.Name) -> None:
        self._mentions(node.value)

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        self._mentions(node.value)
        self._sql(node, node.value)

    def visit_ConcatenatedString(self, node: cst.ConcatenatedString) -> bool:
        text = node.evaluated_value
        if isinstance(text, str):
            self._mentions(text)
            self._sql(node, text)
            return False
        return True

    def _sql(self, node: cst.CSTNode, text: str) -> None:
        """A state machine kept in SQL: `UPDATE t SET status = ...`, `... WHERE status = ...`."""
        upper = text.upper()
        if self.function is None or ("UPDATE" not in upper and "WHERE" not in upper):
            return
        line = self.line(node)
        for match in _SQL_SET.finditer(text):
            self.facts.status_writes.append(StatusWrite(
                match.group(2).lower(), f"{match.group(3)} (table {match.group(1)})", line,
                self.function))
            self._state_written()
        for match in _SQL_WHERE.finditer(text):
            self.facts.state_queries.append(StatusWrite(
                match.group(2).lower(), f"{match.group(3)} (table {match.group(1)})", line,
                self.function))

    def visit_FormattedStringText(self, node: cst.FormattedStringText) -> None:
        self._mentions(node.value)

    def _mentions(self, text: str) -> None:
        """An idempotency key or deduplication named anywhere in the current function."""
        if self.current is not None and _IDEMPOTENCY.search(text):
            self.current.idempotent = True

    def visit_Decorator(self, node: cst.Decorator) -> bool:
        return False  # read by visit_FunctionDef; not calls made by the function

    def _decorator(self, node: cst.Decorator) -> Decorator:
        expr = node.decorator
        if isinstance(expr, cst.Call):
            return Decorator(dotted(expr.func), self._kwargs(expr), True, self.line(node))
        return Decorator(dotted(expr), {}, False, self.line(node))

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        attrs: dict[str, object] = {}
        attr_lines: dict[str, int] = {}
        methods: list[str] = []
        state_fields: list[tuple[str, int]] = []
        for statement in node.body.body:
            if isinstance(statement, cst.FunctionDef):
                methods.append(statement.name.value)
            elif isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    target, value = _simple_assignment(small)
                    if not target or value is None:
                        continue
                    attrs[target] = self.value(value)
                    attr_lines[target] = self.line(small)
                    if target in STATE_FIELDS and _is_field(value):
                        state_fields.append((target, self.line(small)))
        if self.function is None and not self.classes:
            self.facts.classes.append(ClassDef(
                node.name.value, self.line(node.name),
                [b for b in (dotted(arg.value) for arg in node.bases) if b],
                attrs, methods, state_fields, attr_lines))
        self.classes.append(node.name.value)
        return True

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self.classes.pop()

    # -- assignments -------------------------------------------------------------------

    def visit_Assign(self, node: cst.Assign) -> bool:
        for target in node.targets:
            self._assigned(target.target, node.value, node)
        return True

    def visit_AnnAssign(self, node: cst.AnnAssign) -> bool:
        if node.value is not None:
            self._assigned(node.target, node.value, node)
        return True

    def _assigned(self, target: cst.BaseExpression, value: cst.BaseExpression,
                  node: cst.CSTNode) -> None:
        line = self.line(node)
        name = dotted(target)
        at_module = self.function is None and not self.classes
        if isinstance(target, cst.Name) and at_module:
            self.facts.assignments.append(Assignment(target.value, self.value(value), line))
            if isinstance(value, cst.Call) and (callee := dotted(value.func)):
                factory = None if self._qualified(callee) in _CELERY_CLASSES else callee
                self.facts.apps.append(App(target.value, line, self._kwargs(value), factory))
            elif (isinstance(value, cst.Call) and isinstance(value.func, cst.Call)
                  and (maker := dotted(value.func.func))):
                # `import_string(path)(main="x")`: a class known only at run time, made
                # at once; an app if it is used as one (`config.celery_apps`).
                self.facts.apps.append(App(target.value, line, self._kwargs(value),
                                           f"{maker}()"))
            if isinstance(value, cst.Dict):
                self._table(target.value, value, line)
        if (isinstance(target, cst.Subscript) and isinstance(value, cst.Dict)
                and isinstance(index := target.slice[0].slice, cst.Index)):
            self._beat_entry(index.value, value)  # SCHEDULE["name"] = {"task": ...}
        if name and ".conf." in f"{name}" and name.count(".") >= 2:
            app, _, key = name.rpartition(".conf.")
            self.facts.conf_writes.append(ConfWrite(
                app, key, self.value(value), line,
                self.function or ("<nested>" if self.def_depth else None)))
        if self.function is None:
            return
        if isinstance(target, cst.Attribute) and target.attr.value in STATE_FIELDS:
            self.facts.status_writes.append(
                StatusWrite(target.attr.value, code(value), line, self.function))
            self._state_written()
        if isinstance(target, cst.Name):
            self._bind(target)
            self.local_values[target.value] = value
            if (canvas := self._canvas(value)) is not None:
                self.local_canvases[target.value] = canvas
            elif isinstance(value, cst.List | cst.Tuple | cst.ListComp | cst.GeneratorExp):
                self.local_lists[target.value] = self._members(value)

    def _table(self, name: str, value: cst.Dict, line: int) -> None:
        """`HANDLERS = {"paid": charge, ...}`: a dict that may map keys to tasks."""
        entries: dict[str, str] = {}
        for element in value.elements:
            if isinstance(element, cst.DictElement) and (ref := dotted(element.value)):
                entries[code(element.key)] = ref
        if entries:
            self.facts.tables.append((name, entries, line))

    # -- calls ---------------------------------------------------------------------------

    def visit_With(self, node: cst.With) -> bool:
        # Only a context that names nothing: `with httpx.Client() as client:` keeps a
        # client that the task then calls out through.
        self.context_calls.update(id(item.item) for item in node.items
                                  if isinstance(item.item, cst.Call) and item.asname is None)
        self.transactions.append(any(
            isinstance(item.item, cst.Call)
            and (dotted(item.item.func) or "").rsplit(".", 1)[-1] in _TRANSACTIONS
            for item in node.items))
        for item in node.items:
            if item.asname is not None:
                self._bind(item.asname.name)
        return True

    def leave_With(self, original_node: cst.With) -> None:
        self.transactions.pop()
        if self.write_pending and not any(self.transactions):
            self.state_written_at, self.write_pending = len(self.facts.calls), False

    def _state_written(self) -> None:
        """The current function wrote a row's state: done now, or when the transaction
        it is in ends."""
        if self.state_written_at is not None or self.write_pending:
            return
        if any(self.transactions):
            self.write_pending = True
        else:
            self.state_written_at = len(self.facts.calls)

    def visit_For(self, node: cst.For) -> bool:
        self._bind(node.target)
        return True

    def _bind(self, target: cst.BaseExpression) -> None:
        """Names a function binds by assignment, `for` or `with ... as`."""
        if self.current is None:
            return
        if isinstance(target, cst.Name):
            self.current.bound.add(target.value)
        elif isinstance(target, cst.Tuple | cst.List):
            for element in target.elements:
                self._bind(element.value)

    def visit_ExceptHandler(self, node: cst.ExceptHandler) -> bool:
        self.except_depth += 1
        return True

    def leave_ExceptHandler(self, original_node: cst.ExceptHandler) -> None:
        self.except_depth -= 1

    def visit_Dict(self, node: cst.Dict) -> bool:
        for element in node.elements:
            if isinstance(element, cst.DictElement) and isinstance(element.value, cst.Dict):
                self._beat_entry(element.key, element.value)
        return True

    def _beat_entry(self, key: cst.BaseExpression, value: cst.Dict) -> None:
        """`"name": {"task": ..., "schedule": ...}`: an entry of a beat schedule."""
        entry = self.value(value)
        if isinstance(entry, dict) and "task" in entry:
            name = self.value(key)
            self.facts.beat.append(BeatEntry(
                name if isinstance(name, str) else code(key), entry["task"],
                entry.get("schedule"), self.line(key)))

    def visit_Call(self, node: cst.Call) -> bool:
        line = self.line(node)
        func = node.func
        method = func.attr.value if isinstance(func, cst.Attribute) else None
        base_expr = func.value if isinstance(func, cst.Attribute) else None
        table = None
        if isinstance(base_expr, cst.Subscript):
            table = dotted(base_expr.value)
        elif (isinstance(base_expr, cst.Call) and isinstance(base_expr.func, cst.Attribute)
              and base_expr.func.attr.value == "get"):
            table = dotted(base_expr.func.value)
        kwargs = self._kwargs(node)
        eta = self._eta(node)
        if (method in ("append", "extend") and isinstance(base_expr, cst.Name)
                and base_expr.value in self.local_lists and node.args):
            added = node.args[0].value
            one = self._canvas(added) if method == "append" else None
            self.local_lists[base_expr.value] += (
                self._members(added) if method == "extend" else [one] if one else [])
        call = Call(
            func=dotted(func), method=method,
            base=dotted(base_expr) if base_expr is not None else None, table=table,
            positional=[self.value(a.value) for a in node.args
                        if a.keyword is None and not a.star],
            kwargs=kwargs, line=line, function=self.function,
            in_except=self.except_depth > 0, eta_seconds=eta,
            context=id(node) in self.context_calls)
        self._state_query(call, node)
        self._registration(node)
        if method == "add_periodic_task" and len(node.args) >= 2:
            sig = self._canvas(node.args[1].value)
            name = kwargs.get("name")
            self.facts.beat.append(BeatEntry(
                name if isinstance(name, str) else code(node.args[1].value),
                Ref(sig.sig.ref) if sig and sig.sig and sig.sig.ref else (
                    sig.sig.name if sig and sig.sig else None),
                self.value(node.args[0].value), line))
            return False
        canvas = self._launched_canvas(node, method, base_expr, kwargs, eta)
        if canvas is not None and canvas.kind == "sig" and canvas.sig and not canvas.errors:
            call.base = canvas.sig.ref  # `charge.s(x).apply_async(...)`: a call of `charge`
            call.kwargs = {**canvas.launch, **call.kwargs}  # `.set(countdown=...)` too
            call.eta_seconds = canvas.eta_seconds
            self.facts.calls.append(call)
            return False
        if (method in _LAUNCH and canvas is None and call.base is None and table is None
                and base_expr is not None and not _is_super(base_expr)):
            call.dynamic_base = code(base_expr)
        if canvas is not None:
            if canvas.launched_at is not None:  # a canvas built earlier, launched here
                self.facts.canvases = [(c, f) for c, f in self.facts.canvases
                                       if c.line != canvas.line or f != self.function]
            self.facts.canvases.append((canvas, self.function))
            return False
        self.facts.calls.append(call)
        return True

    def _eta(self, node: cst.Call) -> float | None:
        """How far ahead the `eta=` keyword of a call lies, in seconds, if it is known."""
        return next((self._offset(a.value) for a in node.args
                     if a.keyword and a.keyword.value == "eta"), None)

    def _offset(self, expr: cst.BaseExpression) -> float | None:
        """An ETA's distance from now, looking through a local variable once."""
        if isinstance(expr, cst.Name) and expr.value in self.local_values:
            expr = self.local_values[expr.value]
        return offset_seconds(expr, self.constants)

    def _registration(self, node: cst.Call) -> None:
        positional = [a.value for a in node.args if a.keyword is None and not a.star]
        if len(positional) != 1 or (target := dotted(positional[0])) is None:
            return
        if isinstance(node.func, cst.Call):  # app.task(name=X)(target)
            inner = node.func
            decorator = Decorator(dotted(inner.func), self._kwargs(inner), True,
                                  self.line(node))
        elif (dotted(node.func) or "").rsplit(".", 1)[-1] in ("task", "shared_task"):
            decorator = Decorator(dotted(node.func), self._kwargs(node), False,  # app.task(f)
                                  self.line(node))
        else:
            return
        self.facts.registrations.append(Registration(decorator, target, self.function))

    def _kwargs(self, node: cst.Call) -> dict[str, object]:
        """Keyword arguments, with a `**OPTIONS` spread of a dict the module defines."""
        kwargs: dict[str, object] = {}
        for arg in node.args:
            if arg.keyword:
                kwargs[arg.keyword.value] = self.value(arg.value)
            elif arg.star == "**" and isinstance(spread := self.value(arg.value), dict):
                kwargs.update({k: v for k, v in spread.items() if isinstance(k, str)})
        return kwargs

    def _state_query(self, call: Call, node: cst.Call) -> None:
        if self.function is None:
            return
        if call.method == "update":
            for arg in node.args:
                if arg.keyword and arg.keyword.value in STATE_FIELDS:
                    self.facts.status_writes.append(StatusWrite(
                        arg.keyword.value, code(arg.value), call.line, self.function))
                    self._state_written()
        if call.method not in _QUERY_METHODS:
            return
        for arg in node.args:
            if arg.keyword and arg.keyword.value.split("__")[0] in STATE_FIELDS:
                self.facts.state_queries.append(StatusWrite(
                    arg.keyword.value.split("__")[0], code(arg.value), call.line, self.function))
            elif (isinstance(arg.value, cst.Comparison)
                  and (dotted(arg.value.left) or "").rsplit(".", 1)[-1] in STATE_FIELDS):
                self.facts.state_queries.append(StatusWrite(
                    (dotted(arg.value.left) or "").rsplit(".", 1)[-1],
                    code(arg.value.comparisons[0].comparator), call.line, self.function))

    def _launched_canvas(self, node: cst.Call, method: str | None,
                         base_expr: cst.BaseExpression | None, kwargs: dict[str, object],
                         eta: float | None) -> Canvas | None:
        """A canvas built here (chain, group, chord, |, link), or launched with options."""
        if method is None and (isinstance(node.func, cst.BinaryOperation) or (
                isinstance(node.func, cst.Name) and node.func.value in self.local_canvases)):
            # Calling a chain, group or chord applies it asynchronously; calling a single
            # signature runs its task in this process, which is no launch.
            called = self._canvas(node.func)
            if called is not None and called.kind != "sig":
                called.launched_at = self.line(node)
                return called
            return None
        if method in _LAUNCH and base_expr is not None:
            canvas = self._canvas(base_expr)
            if canvas is None and (name := dotted(base_expr)) in self.local_canvases:
                canvas = self.local_canvases[name]
            if canvas is None and ("link" in kwargs or "link_error" in kwargs):
                canvas = Canvas("sig", self.line(node),
                                sig=Sig(dotted(base_expr), None, self.line(node),
                                        code(base_expr)))
            if canvas is not None and ("link" in kwargs or "link_error" in kwargs):
                canvas = self._with_links(canvas, node)
            if canvas is not None:
                canvas.launch = {**canvas.launch, **_timing(kwargs)}
                canvas.launched_at = self.line(node)
                canvas.eta_seconds = eta if eta is not None else canvas.eta_seconds
            return canvas
        canvas = self._canvas(node)
        return canvas if canvas is not None and canvas.kind != "sig" else None

    def _with_links(self, canvas: Canvas, node: cst.Call) -> Canvas:
        for arg in node.args:
            if not arg.keyword or arg.keyword.value not in ("link", "link_error"):
                continue
            linked = self._canvas(arg.value) or self._sequence(arg.value)
            if linked is None:
                continue
            if arg.keyword.value == "link":
                canvas = Canvas("chain", canvas.line, parts=[canvas, linked])
            else:
                canvas.errors += linked.sigs()
        return canvas

    def _sequence(self, expr: cst.BaseExpression) -> Canvas | None:
        if isinstance(expr, cst.List | cst.Tuple):
            parts = [c for c in (self._canvas(e.value) for e in expr.elements) if c]
            return Canvas("group", self.line(expr), parts=parts) if parts else None
        return None

    def _canvas(self, expr: cst.BaseExpression) -> Canvas | None:
        """The canvas an expression builds, or None if it builds none."""
        line = self.line(expr)
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.BitOr):
            left, right = self._canvas(expr.left), self._canvas(expr.right)
            if left is None or right is None:
                return None
            parts = [*(left.parts if left.kind == "chain" else [left]), right]
            return Canvas("chain", line, parts=parts)
        if isinstance(expr, cst.Name) and expr.value in self.local_canvases:
            return self.local_canvases[expr.value]
        if not isinstance(expr, cst.Call):
            return None
        func = expr.func
        name = dotted(func) or ""
        # The method's own name, also on a call (`charge.s(x).set(...)`, which has no dotted name)
        last = func.attr.value if isinstance(func, cst.Attribute) else name.rsplit(".", 1)[-1]
        if isinstance(func, cst.Attribute) and last in _SIGNATURE_METHODS:
            sig = Canvas("sig", line, sig=Sig(dotted(func.value), None, line, code(expr)))
            if last in ("signature", "subtask"):  # task.signature(args, countdown=60)
                sig.launch, sig.eta_seconds = _timing(self._kwargs(expr)), self._eta(expr)
            return sig
        if isinstance(func, cst.Attribute) and last == "set":  # sig.set(countdown=60)
            inner = self._canvas(func.value)
            if inner is not None:
                inner.launch = {**inner.launch, **_timing(self._kwargs(expr))}
                eta = self._eta(expr)
                inner.eta_seconds = eta if eta is not None else inner.eta_seconds
            return inner
        if isinstance(func, cst.Attribute) and last in ("link", "link_error", "on_error"):
            inner = self._canvas(func.value)
            linked = self._canvas(expr.args[0].value) if expr.args else None
            if inner is None or linked is None:
                return inner
            if last == "link":
                return Canvas("chain", line, parts=[inner, linked])
            inner.errors += linked.sigs()
            return inner
        if last in _SIGNATURE_FUNCTIONS and expr.args and self._from_celery(name):
            first = self.value(expr.args[0].value)
            if isinstance(first, Ref):
                return Canvas("sig", line, sig=Sig(first.dotted, None, line, code(expr),
                                                   dynamic=True))
            return Canvas("sig", line, sig=Sig(None, first if isinstance(first, str) else None,
                                               line, code(expr)))
        if (isinstance(func, cst.Call) and (inner_name := dotted(func.func) or "")
                and inner_name.rsplit(".", 1)[-1] == "chord" and self._from_celery(inner_name)):
            header = self._canvas(func)
            body = self._canvas(expr.args[0].value) if expr.args else None
            if header is not None:
                header.body = body
            return header
        if last in _CANVAS and self._from_celery(name):
            members: list[Canvas] = []
            args = [a for a in expr.args if a.keyword is None]
            for arg in args:
                members += self._members(arg.value)
            canvas = Canvas(last, line, parts=members)  # type: ignore[arg-type]
            if last == "chord" and len(args) >= 2 and canvas.parts:
                canvas.body = canvas.parts.pop()
            return canvas
        return None


    def _members(self, value: cst.BaseExpression) -> list[Canvas]:
        """What an argument of a group or chain holds: a canvas, a list or comprehension of
        them, or a list the function built (`group(*tasks)` after `tasks.append(x.s())`)."""
        if isinstance(value, cst.List | cst.Tuple):
            return [c for c in (self._canvas(e.value) for e in value.elements) if c]
        if isinstance(value, cst.GeneratorExp | cst.ListComp):
            inner = self._canvas(value.elt)
        elif isinstance(value, cst.Name) and value.value in self.local_lists:
            return list(self.local_lists[value.value])
        else:
            inner = self._canvas(value)
        return [inner] if inner is not None else []

    def _qualified(self, name: str) -> str:
        """`name` as imported so far: `Celery` -> `celery.Celery`."""
        head, _, rest = name.partition(".")
        qualified = self.facts.imports.get(head)
        if qualified is None:
            return name
        return f"{qualified}.{rest}" if rest else qualified

    def _from_celery(self, name: str) -> bool:
        """Whether `group`, `chain`, `signature`... is Celery's (and not `match.group`)."""
        return (name.partition(".")[0] in self.facts.imports
                and self._qualified(name).startswith("celery"))


def _is_super(expr: cst.BaseExpression) -> bool:
    """`super()`: a Task class's own `apply_async` handing on to Celery's."""
    return isinstance(expr, cst.Call) and dotted(expr.func) == "super"


def _timing(kwargs: dict[str, object]) -> dict[str, object]:
    """The options of a call that delay a task: countdown and eta."""
    return {k: v for k, v in kwargs.items() if k in ("countdown", "eta")}


def _is_field(value: cst.BaseExpression) -> bool:
    """A model field declaration: `models.CharField(...)`, `Column(...)`, `mapped_column()`."""
    if not isinstance(value, cst.Call):
        return False
    last = (dotted(value.func) or "").rsplit(".", 1)[-1]
    return last.endswith("Field") or last in ("Column", "mapped_column", "FSMField")
