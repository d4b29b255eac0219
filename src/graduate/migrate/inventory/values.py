"""The value of an expression, as far as it can be known without running the code.

Literals, arithmetic on them, module constants, `timedelta(...)`, `crontab(...)` and
`os.environ.get("X", default)` are evaluated; anything else stays an `Unknown` that
keeps its source text, so a report can still show what was written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import libcst as cst

_EMPTY = cst.Module(body=[])


@dataclass(frozen=True, eq=False)
class Unknown:
    """An expression whose value depends on running the code; its source text is made
    only when shown (printing code is the costly part of reading a large codebase)."""

    node: cst.CSTNode

    @property
    def text(self) -> str:
        return code(self.node)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Ref:
    """A name or an attribute chain (`app.task`, `tasks.charge`), to be resolved later."""

    dotted: str

    def __str__(self) -> str:
        return self.dotted


@dataclass(frozen=True)
class Schedule:
    """A beat schedule (`crontab`, `solar`, `schedule`) and roughly how often it fires."""

    text: str
    seconds: float | None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class FromEnv:
    """A value read from an environment variable, with its default if one is written."""

    variable: str
    default: object

    def __str__(self) -> str:
        return f"${self.variable} (default {self.default!r})"


def code(node: cst.CSTNode) -> str:
    """The source text of a node, on one line."""
    return " ".join(_EMPTY.code_for_node(node).split())


def dotted(expr: cst.BaseExpression) -> str | None:
    """`a.b.c` for a name or an attribute chain; None for anything else."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        base = dotted(expr.value)
        return None if base is None else f"{base}.{expr.attr.value}"
    return None


_TIMEDELTA_UNITS = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0,
                    "seconds": 1.0, "milliseconds": 0.001, "microseconds": 0.000001}
_TIMEDELTA_POSITIONAL = ("days", "seconds", "microseconds", "milliseconds", "minutes",
                         "hours", "weeks")
_ENV_READERS = ("os.environ.get", "os.getenv", "environ.get", "getenv", "env", "config",
                "env.str", "env.int")


def evaluate(expr: cst.BaseExpression, constants: Mapping[str, object]) -> object:
    """The value of `expr`, or a Ref, Schedule, FromEnv or Unknown standing for it."""
    match expr:
        case cst.Integer() | cst.Float():
            return expr.evaluated_value
        case cst.SimpleString() | cst.ConcatenatedString():
            value = expr.evaluated_value
            return value if isinstance(value, str) else Unknown(expr)
        case cst.Name(value="True"):
            return True
        case cst.Name(value="False"):
            return False
        case cst.Name(value="None"):
            return None
        case cst.Tuple() | cst.List() | cst.Set():
            return tuple(evaluate(e.value, constants) for e in expr.elements
                         if isinstance(e, cst.Element))
        case cst.Dict():
            return _dict(expr, constants)
        case cst.UnaryOperation(operator=cst.Minus()):
            inner = evaluate(expr.expression, constants)
            return -float(inner) if isinstance(inner, int | float) else Unknown(expr)
        case cst.BinaryOperation():
            return _arithmetic(expr, constants)
        case cst.Call():
            return _call(expr, constants)
    name = dotted(expr)
    if name is None:
        return Unknown(expr)
    if name in constants:
        return constants[name]
    return Ref(name)


def seconds(value: object) -> float | None:
    """A duration in seconds from an evaluated value (a number or a timedelta)."""
    if _number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, FromEnv):
        return seconds(value.default)
    return None


def offset_seconds(expr: cst.BaseExpression, constants: Mapping[str, object]) -> float | None:
    """For an ETA such as `now() + timedelta(hours=2)`: the offset from now, in seconds."""
    found: list[float] = []

    class _Deltas(cst.CSTVisitor):
        def visit_Call(self, node: cst.Call) -> bool:
            if (dotted(node.func) or "").rsplit(".", 1)[-1] == "timedelta":
                value = seconds(_call(node, constants))
                if value is not None:
                    found.append(value)
                return False
            return True

    expr.visit(_Deltas())
    return sum(found) if found else None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dict(expr: cst.Dict, constants: Mapping[str, object]) -> object:
    result: dict[object, object] = {}
    for element in expr.elements:
        if not isinstance(element, cst.DictElement):
            return Unknown(expr)  # a `**other` spread: the keys are not all known
        key = evaluate(element.key, constants)
        result[key if isinstance(key, str | int | float | bool) else str(key)] = (
            evaluate(element.value, constants))
    return result


def _arithmetic(expr: cst.BinaryOperation, constants: Mapping[str, object]) -> object:
    left = evaluate(expr.left, constants)
    right = evaluate(expr.right, constants)
    if not (_number(left) and _number(right)):
        return Unknown(expr)
    a, b = float(left), float(right)  # type: ignore[arg-type]
    match expr.operator:
        case cst.Add():
            result = a + b
        case cst.Subtract():
            result = a - b
        case cst.Multiply():
            result = a * b
        case cst.Divide() | cst.FloorDivide() if b:
            result = a / b if isinstance(expr.operator, cst.Divide) else a // b
        case cst.Power() if abs(b) < 64:
            result = a**b
        case _:
            return Unknown(expr)
    both_int = isinstance(left, int) and isinstance(right, int)
    return int(result) if both_int and result == int(result) else result


def _call(expr: cst.Call, constants: Mapping[str, object]) -> object:
    name = dotted(expr.func) or ""
    last = name.rsplit(".", 1)[-1]
    kwargs = {a.keyword.value: evaluate(a.value, constants) for a in expr.args if a.keyword}
    positional = [evaluate(a.value, constants) for a in expr.args
                  if a.keyword is None and not a.star]
    if last == "timedelta":
        total = 0.0
        named = {**dict(zip(_TIMEDELTA_POSITIONAL, positional, strict=False)), **kwargs}
        for unit, value in named.items():
            if unit not in _TIMEDELTA_UNITS or not _number(value):
                return Unknown(expr)
            total += float(value) * _TIMEDELTA_UNITS[unit]  # type: ignore[arg-type]
        return total
    if last == "crontab":
        return Schedule(code(expr), _crontab_period(kwargs))
    if last == "solar":
        return Schedule(code(expr), 86400.0)
    if last == "schedule":
        every = kwargs.get("run_every", positional[0] if positional else None)
        return Schedule(code(expr), seconds(every))
    if name in _ENV_READERS and positional and isinstance(positional[0], str):
        default = kwargs.get("default", positional[1] if len(positional) > 1 else None)
        return FromEnv(positional[0], default)
    return Unknown(expr)


_EVERY = re.compile(r"^\*/(\d+)$")


def _crontab_period(fields: Mapping[str, object]) -> float | None:
    """How often a crontab fires, roughly: enough to compare it with hours and days."""
    if "day_of_month" in fields or "month_of_year" in fields:
        return 30 * 86400.0
    if "day_of_week" in fields:
        return 7 * 86400.0
    for name, unit, whole in (("hour", 3600.0, 86400.0), ("minute", 60.0, 3600.0)):
        if name in fields:
            value = fields[name]
            if value == "*":
                continue
            if isinstance(value, str) and (match := _EVERY.match(value)):
                return int(match.group(1)) * unit
            return whole
    return 60.0
