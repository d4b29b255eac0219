"""The stored record of a run and of a matrix: typed, versioned, read back field by field.

The evidence store keeps a `RunRecord` for each chaos run and a `MatrixRecord` for each
matrix, as JSON with a `schema_version` and a `kind`. Reports, the ADR gates and the
attached evidence read them only through these classes, never by raw keys.

`from_dict` checks every field against its declared type, so a damaged or edited file
is refused with the name of the file and of the field, and a schema version this
graduate does not know is refused as such. The record holds the checker's own verdict
types (`graduate.check`), the ledger's rows and the timeline's events, and the codec
follows their fields: a field added to a verdict
(with a default, for older files) is written and read with no change here.

Each kind has its own schema version. A run is at version 1, the shape the first
release wrote, including the committed demo evidence. A matrix is at version 2: its
cells carry the fault's `options` since faults declare them (version 1 cells had
`versioned` and `cold` fields, read as those options). Change a written shape only with
a new version, and keep reading the older ones.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from graduate.adapters.base import HistoryEvent
from graduate.chaos.faults import Hit, OptionValue, plan_from_record
from graduate.check import FaultFacts, InstanceVerdict, NoticeVerdict, RunVerdict
from graduate.errors import EvidenceError
from graduate.flow import Flow, flow_from_dict
from graduate.ledger import EffectRecord
from graduate.runs.timeline import TimelineEvent
from graduate.timescale import TimeScaleRecord

# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class FlowRecord:
    """The flow a run ran, with its definition as the run saw it."""

    name: str
    version: int
    source: str
    definition: dict[str, Any]  # `graduate.flow.flow_to_dict`

    def load(self) -> Flow:
        """The flow as the run ran it."""
        return flow_from_dict(self.definition, source=self.source,
                              origin=f"the flow recorded by a run ({self.source})")


@dataclass(frozen=True)
class FaultRecord:
    """The fault plan of a run, and what became of it.

    Stored flat, as `FaultPlan.to_dict` writes a plan (each option of every registered
    fault is a key of its own) with the outcome beside it. Which options exist is the
    fault registry's to say, so any key besides the fields here is read as an option.
    """

    fault: str
    step: str | None
    point: str | None
    offset: float | None
    restart_delay: float
    partition_for: float
    description: str
    applicable: bool
    fired: bool
    reason: str  # why it does not apply, or why it never fired
    options: dict[str, OptionValue] = field(default_factory=dict)  # by option name
    # Of several instances, the fault hit the first at its point, or each as it reached
    # it (`chaos.faults.HITS`). Absent from runs stored before it could hit all.
    hit: Hit = "one"

    @classmethod
    def of(cls, plan: Mapping[str, Any], *, description: str, applicable: bool, fired: bool,
           reason: str) -> FaultRecord:
        """The record of a plan (`FaultPlan.to_dict()`) and its outcome."""
        return _from_value(cls, {**plan, "description": description, "applicable": applicable,
                                 "fired": fired, "reason": reason}, source="a fault plan")

    def facts(self) -> FaultFacts:
        """What the checker needs to know of this fault (`graduate.check.FaultFacts`), as
        its fault module declares it."""
        kind = plan_from_record(self.plan_fields()).fault
        return FaultFacts(kind.fires, self.fired, kind.expects_resume, self.reason)

    def plan_fields(self) -> dict[str, Any]:
        """The plan as `FaultPlan.to_dict` wrote it, for `chaos.faults.plan_from_record`."""
        return {"fault": self.fault, "step": self.step, "point": self.point,
                "offset": self.offset, "restart_delay": self.restart_delay,
                "partition_for": self.partition_for, "hit": self.hit, **self.options}


@dataclass(frozen=True)
class OptionsRecord:
    """What the run was asked for."""

    instances: int
    workers: int
    deadline: float
    decisions: dict[str, str]
    wait_deadline: float | None  # the waits' shortened deadline, for wait-timeout runs
    app: str | None = None  # the team's app that ran ([tool.graduate.apps.NAME]), if one did
    # The flow's durations as the run used them, when it ran under a time scale (absent
    # from runs in real time, and from runs stored before a run could be scaled).
    time_scale: TimeScaleRecord | None = None
    # Started by the run ("local"), or registered by `graduate worker` ("external");
    # absent from runs stored before workers could be registered.
    workers_from: str = "local"
    # The flow's inputs given to every instance (`--input`; each instance's own, defaults
    # included, is in its verdict); absent from runs stored before flows took inputs.
    input: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class EnvironmentRecord:
    """Where the run ran: the host, package and server versions, and the services."""

    host: dict[str, Any]
    packages: dict[str, str | None]
    servers: dict[str, str | None]
    services: dict[str, Any]  # `Services.describe()`: every secret already redacted


@dataclass(frozen=True)
class InstanceEvidence:
    """One instance: the checker's verdict, and the engine's own record of it. Stored as
    one object: the verdict's fields and `history`."""

    verdict: InstanceVerdict
    history: tuple[HistoryEvent, ...]


@dataclass(frozen=True)
class RunRecord:
    """Everything one chaos run leaves: inputs, environment, timeline, ledger, verdicts."""

    KIND: ClassVar[str] = "run"
    SCHEMA_VERSION: ClassVar[int] = 1  # what this graduate writes
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1,)

    run_id: str
    created_at: str
    flow: FlowRecord
    engine: str
    profile: str
    settings: dict[str, Any]  # the engine's effective settings
    fault: FaultRecord
    options: OptionsRecord
    environment: EnvironmentRecord
    timeline: tuple[TimelineEvent, ...]
    instances: tuple[InstanceEvidence, ...]
    ledger: tuple[EffectRecord, ...]
    verdict: RunVerdict  # as judged when the run was stored
    # Epoch seconds; timeline times count from here. Absent from runs stored before
    # version 1 recorded it.
    started_at: float | None = None

    @property
    def verdicts(self) -> tuple[InstanceVerdict, ...]:
        return tuple(i.verdict for i in self.instances)

    @property
    def not_started(self) -> int:
        """Instances the run never started: its deadline passed first (a fault that did
        not apply starts none, and has none to start). A pinned deploy starts one more
        instance after the fault, so a run may hold more than it asked for."""
        missing = self.options.instances - len(self.instances)
        return max(0, missing) if self.fault.applicable else 0

    @property
    def fault_fired_at(self) -> float | None:
        """When the fault fired, in seconds since the run started."""
        return next((e.at for e in self.timeline if e.kind == "fault-fired"), None)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def json_chunks(self) -> Iterator[str]:
        """`json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)`, the same
        text, in pieces: each instance and each ledger row is encoded in turn, so the
        whole record is never held a second time as a dict (thousands of instances,
        each with its history and effects)."""
        long = {"instances": self.instances, "ledger": self.ledger}
        head = _to_dict(self, leave_out=tuple(long))

        def dumped(value: Any, depth: int) -> str:
            text = json.dumps(value, indent=2, sort_keys=True, default=str)
            return text.replace("\n", "\n" + "  " * depth)

        for number, key in enumerate(sorted([*head, *long])):
            yield f"{',' if number else '{'}\n  {json.dumps(key)}: "
            if key in head:
                yield dumped(head[key], 1)
                continue
            items = long[key]
            yield "[" if items else "[]"
            for place, item in enumerate(items):
                yield f"{',' if place else ''}\n    {dumped(_encode(item), 2)}"
            if items:
                yield "\n  ]"
        yield "\n}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "run record") -> RunRecord:
        """Read a stored run; `source` (the file) is named in every error."""
        return _from_dict(cls, data, source)


# ---------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class MatrixSpecRecord:
    """What a matrix was asked to cover (`graduate.chaos.matrix.MatrixSpec`, as stored)."""

    flow: str
    engines: tuple[str, ...]
    faults: tuple[str, ...]
    profiles: tuple[str, ...]
    at: str | None
    instances: int
    timeout: float
    restart_delay: float
    wait_deadline: float
    # Absent from matrices stored before a matrix could hit every instance or choose
    # the deploy's change.
    hit: str = "one"
    change: str = "reorder"
    # Absent from matrices stored before a matrix could run under a time scale.
    time_scale: str = "1"
    # Where the workers came from: started by each run, or registered (`graduate worker`);
    # absent from matrices stored before workers could be registered.
    workers: str = "local"
    # The flow's inputs given to every instance (`--input`); absent from matrices
    # stored before flows took inputs.
    input: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class CellSummary:
    """The numbers of one settled cell, kept in the matrix file so that the matrix still
    reads when a run file is missing."""

    completed: int
    compensated: int
    failed: int
    lost: int
    stuck: int
    instances: int
    applicable: bool
    fired: bool
    reason: str
    unabsorbed_duplicates: int
    absorbed_duplicates: int
    hit_by_fault: int
    resumed_exactly: int
    median_time_to_resume: float | None
    passed: bool
    failures: tuple[str, ...]
    # Of those hit, how many carried on in the same process and attempt (not a resume).
    # Absent from cells settled before the checker told the two apart.
    continued: int = 0


@dataclass(frozen=True)
class CellOutcome:
    """One cell of a matrix, as planned and then as settled by its run. Stored with an
    empty summary (`{}`) until it has one."""

    key: str
    engine: str
    fault: str
    at: str | None
    profile: str
    options: dict[str, OptionValue] = field(default_factory=dict)  # the fault's, if not default
    status: Literal["pending", "done", "not-applicable"] = "pending"
    run_id: str | None = None
    summary: CellSummary | None = None

    @property
    def label(self) -> str:
        """The fault with its flags, as the cell's key names it: `stop-worker+cold`."""
        return "+".join((self.fault, *(k for k, v in self.options.items() if v is True)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "matrix cell") -> CellOutcome:
        """A cell as a matrix file keeps it (any version)."""
        return _from_value(cls, data, source=source)


@dataclass(frozen=True)
class MatrixRecord:
    """A matrix file: its spec, and every cell with the run that settled it."""

    KIND: ClassVar[str] = "matrix"
    SCHEMA_VERSION: ClassVar[int] = 2  # version 1 cells had `versioned` and `cold` fields
    READABLE_VERSIONS: ClassVar[tuple[int, ...]] = (1, 2)

    matrix_id: str
    created_at: str
    flow: str
    spec: MatrixSpecRecord
    cells: tuple[CellOutcome, ...]
    updated_at: str | None = None  # absent until the first save after planning

    def to_dict(self) -> dict[str, Any]:
        data = _to_dict(self)
        if self.updated_at is None:
            del data["updated_at"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *,
                  source: str = "matrix record") -> MatrixRecord:
        """Read a stored matrix; `source` (the file) is named in every error."""
        return _from_dict(cls, data, source)


Record = RunRecord | MatrixRecord
R = TypeVar("R", RunRecord, MatrixRecord)
T = TypeVar("T")


def record_from_dict(data: Mapping[str, Any], *, source: str) -> Record:
    """A run or a matrix, by the `kind` the file says it holds."""
    kinds: dict[object, type[Record]] = {RunRecord.KIND: RunRecord,
                                         MatrixRecord.KIND: MatrixRecord}
    cls = kinds.get(data.get("kind"))
    if cls is None:
        raise EvidenceError(f"{source} is neither a run nor a matrix of the evidence store "
                            f"(kind = {data.get('kind')!r})")
    return cls.from_dict(data, source=source)


# ---------------------------------------------------------------------------- the codec


class _Invalid(Exception):
    def __init__(self, where: str, problem: str, *, unknown: bool = False) -> None:
        super().__init__(problem)
        self.where = where or "(the record)"
        self.problem = problem
        self.unknown = unknown  # a field the schema does not have

    def describe(self, version: object) -> str:
        if self.unknown:
            schema = f"schema version {version}" if version is not None else "the schema"
            return f"field {self.where} is not part of {schema}"
        return f"field {self.where} {self.problem}"


def _to_dict(record: RunRecord | MatrixRecord,
             leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    body = {f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)
            if f.name not in leave_out}
    return {"schema_version": record.SCHEMA_VERSION, "kind": record.KIND, **body}


def _from_dict(cls: type[R], data: Mapping[str, Any], source: str) -> R:
    if not isinstance(data, Mapping):
        raise EvidenceError(f"{source} holds {type(data).__name__}, not a record; restore "
                            "the file or run again")
    kind = cls.KIND
    if data.get("kind") != kind:
        raise EvidenceError(f"{source} holds a {data.get('kind')!r} record, not a {kind}")
    version = data.get("schema_version")
    if version not in cls.READABLE_VERSIONS:
        readable = " or ".join(str(v) for v in cls.READABLE_VERSIONS)
        raise EvidenceError(f"{source} has schema version {version!r}; this graduate reads "
                            f"a {kind} of version {readable}. Read it with the graduate that "
                            "wrote it, or run again to write it anew")
    body = {k: v for k, v in data.items() if k not in ("schema_version", "kind")}
    return _from_value(cls, body, source=source, version=version)


def _from_value(cls: type[T], data: Mapping[str, Any], *, source: str,
                version: object = None) -> T:
    try:
        value: T = _decode(cls, dict(data), "")
        return value
    except _Invalid as error:
        raise EvidenceError(f"{source}: {error.describe(version)}; the file was edited or "
                            "damaged: restore it, or run again") from None


def _encode(value: Any) -> Any:
    return _encoder(value.__class__)(value)


@functools.cache
def _encoder(kind: Any) -> Callable[[Any], Any]:
    """How a value of type `kind` is written, worked out once per type (as `_decoder`)."""
    custom = _ENCODERS.get(kind)
    if custom is not None:
        return custom
    if dataclasses.is_dataclass(kind):
        return _encode_fields
    if issubclass(kind, Enum):
        return lambda value: value.value
    if issubclass(kind, list | tuple):
        return lambda value: [_encode(v) for v in value]
    if issubclass(kind, dict):
        return lambda value: {str(k): _encode(v) for k, v in value.items()}
    return lambda value: value


def _encode_fields(value: Any) -> dict[str, Any]:
    return {name: _encode(getattr(value, name)) for name in _field_names(value.__class__)}


@functools.cache
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _decode(kind: Any, raw: Any, where: str) -> Any:
    return _decoder(kind)(raw, where)


_Decoder = Callable[[Any, str], Any]


@functools.cache
def _decoder(kind: Any) -> _Decoder:
    """The decoder of `kind`, worked out once per type: reading a folder of runs decodes
    millions of values, and asking each time what a type is (its origin, its arguments,
    its fields and their hints) cost most of the reading. Every check is still made on
    every value; only the question of which checks to make is answered once."""
    custom = _DECODERS.get(kind)
    if custom is not None:
        return custom
    if kind is Any:
        return lambda raw, where: raw
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        return _union_decoder(get_args(kind))
    if origin is Literal:
        return _literal_decoder(get_args(kind))
    if origin is tuple:
        return _tuple_decoder(_decoder(get_args(kind)[0]))
    if origin is dict:
        return _dict_decoder(_decoder(get_args(kind)[1]))
    if isinstance(kind, type) and issubclass(kind, Enum):
        return _enum_decoder(kind)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return _fields_decoder(kind)
    return _scalar_decoder(kind)


def _union_decoder(options: tuple[Any, ...]) -> _Decoder:
    nullable = type(None) in options
    decoders = [_decoder(o) for o in options if o is not type(None)]
    if len(decoders) == 1:  # `X | None`: X's own problem is the value's problem
        only = decoders[0]

        def optional(raw: Any, where: str) -> Any:
            return None if raw is None and nullable else only(raw, where)
        return optional

    def union(raw: Any, where: str) -> Any:
        if raw is None and nullable:
            return None
        problems = []
        for decode in decoders:
            try:
                return decode(raw, where)
            except _Invalid as error:
                problems.append(error)
        if len(problems) == 1:
            raise problems[0]
        raise _Invalid(where, f"is {_shown(raw)}, which none of its types accepts")
    return union


def _literal_decoder(choices: tuple[Any, ...]) -> _Decoder:
    def literal(raw: Any, where: str) -> Any:
        if raw not in choices:
            raise _Invalid(where, f"is {raw!r}, not one of "
                                  f"{', '.join(repr(a) for a in choices)}")
        return raw
    return literal


def _tuple_decoder(item: _Decoder) -> _Decoder:
    def items(raw: Any, where: str) -> Any:
        if not isinstance(raw, list | tuple):  # a tuple: a record built in Python
            raise _Invalid(where, f"should be a list, not {_shown(raw)}")
        return tuple([item(v, f"{where}[{n}]") for n, v in enumerate(raw)])
    return items


def _dict_decoder(item: _Decoder) -> _Decoder:
    def entries(raw: Any, where: str) -> Any:
        if not isinstance(raw, dict):
            raise _Invalid(where, f"should be an object, not {_shown(raw)}")
        return {str(k): item(v, f"{where}.{k}") for k, v in raw.items()}
    return entries


def _enum_decoder(kind: type[Enum]) -> _Decoder:
    def member(raw: Any, where: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in kind)
            raise _Invalid(where, f"is {raw!r}, not one of {choices}") from None
    return member


_SCALARS: dict[Any, tuple[tuple[type, ...], str]] = {
    str: ((str,), "a string"),
    bool: ((bool,), "true or false"),
    int: ((int,), "a whole number"),
    float: ((int, float), "a number"),
}


def _scalar_decoder(kind: Any) -> _Decoder:
    if kind is type(None):
        def null(raw: Any, where: str) -> Any:
            if raw is not None:
                raise _Invalid(where, f"should be null, not {_shown(raw)}")
            return None
        return null
    if kind not in _SCALARS:
        raise TypeError(f"a stored record cannot hold a {kind!r}")
    accepted, name = _SCALARS[kind]

    def scalar(raw: Any, where: str) -> Any:
        if type(raw) is kind:  # what JSON gives: the checks below would all pass
            return raw
        # JSON has no separate booleans-as-numbers: true is not 1 here.
        if not isinstance(raw, accepted) or (kind is not bool and isinstance(raw, bool)):
            raise _Invalid(where, f"should be {name}, not {_shown(raw)}")
        # A float field written as a whole number (JSON's 5 for 5.0) reads as the float.
        return float(raw) if kind is float and isinstance(raw, int) else raw
    return scalar


def _decode_fields(cls: Any, raw: Any, where: str) -> Any:
    return _fields_decoder(cls)(raw, where)


@functools.cache
def _fields_decoder(cls: Any) -> _Decoder:
    """The decoder of a dataclass's fields (as stored, whatever `_DECODERS` says of it)."""
    hints = get_type_hints(cls)
    # (name, required, decoder) of each field, in declared order: the first problem met
    # is the one named.
    plan = [(f.name, f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING, _decoder(hints[f.name]))
            for f in dataclasses.fields(cls) if f.init]
    names = frozenset(name for name, _, _ in plan)

    def fields(raw: Any, where: str) -> Any:
        if not isinstance(raw, dict):
            raise _Invalid(where, f"should be an object, not {_shown(raw)}")
        if not names.issuperset(raw):
            unknown = sorted(set(raw) - names)
            raise _Invalid(_join(where, unknown[0]), "is not part of the schema",
                           unknown=True)
        values = {}
        for name, required, decode in plan:
            if name not in raw:
                if required:
                    raise _Invalid(_join(where, name), "is missing")
                continue
            values[name] = decode(raw[name], f"{where}.{name}" if where else name)
        return cls(**values)
    return fields


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _shown(raw: Any) -> str:
    if raw is None:
        return "null"
    text = repr(raw)
    return f"{type(raw).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# The places where the stored shape is not the dataclass's: an instance is its
# verdict's fields plus `history`; a run verdict carries `passed`, derived from its
# failures; a cell not yet settled has an empty summary; a notice keeps its owner under
# the key `wait`, as version 1 wrote it before the interrupt's notice shared the type.


def _encode_instance(value: InstanceEvidence) -> dict[str, Any]:
    return {**_encode_fields(value.verdict), "history": _encode(value.history)}


def _decode_instance(raw: Any, where: str) -> InstanceEvidence:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"should be an object, not {_shown(raw)}")
    if "history" not in raw:
        raise _Invalid(_join(where, "history"), "is missing")
    return InstanceEvidence(
        verdict=_decode_fields(InstanceVerdict,
                               {k: v for k, v in raw.items() if k != "history"}, where),
        history=_decode(tuple[HistoryEvent, ...], raw["history"], _join(where, "history")))


def _encode_run_verdict(value: RunVerdict) -> dict[str, Any]:
    return {**_encode_fields(value), "passed": value.passed}


def _decode_run_verdict(raw: Any, where: str) -> RunVerdict:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"should be an object, not {_shown(raw)}")
    if "passed" not in raw:
        raise _Invalid(_join(where, "passed"), "is missing")
    _decode(bool, raw["passed"], _join(where, "passed"))
    verdict: RunVerdict = _decode_fields(
        RunVerdict, {k: v for k, v in raw.items() if k != "passed"}, where)
    return verdict


def _encode_fault(value: FaultRecord) -> dict[str, Any]:
    fields = _encode_fields(value)
    return {**{k: v for k, v in fields.items() if k != "options"}, **value.options}


def _decode_fault(raw: Any, where: str) -> FaultRecord:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"should be an object, not {_shown(raw)}")
    named = {f.name for f in dataclasses.fields(FaultRecord)} - {"options"}
    options = {k: _decode(OptionValue, v, _join(where, k))
               for k, v in raw.items() if k not in named}
    fault: FaultRecord = _decode_fields(
        FaultRecord, {**{k: v for k, v in raw.items() if k in named}, "options": options},
        where)
    return fault


# Cells of version 1 kept these options of their fault as fields of their own.
_LEGACY_CELL_OPTIONS = ("versioned", "cold")


def _encode_cell(value: CellOutcome) -> dict[str, Any]:
    return {**_encode_fields(value), "summary": _encode(value.summary) or {}}


def _decode_cell(raw: Any, where: str) -> CellOutcome:
    if isinstance(raw, dict):
        raw = dict(raw)
        if raw.get("summary") == {}:
            raw["summary"] = None
        legacy = {name: raw.pop(name) for name in _LEGACY_CELL_OPTIONS if name in raw}
        for name, value in legacy.items():
            _decode(bool, value, _join(where, name))
        if legacy:
            raw["options"] = {**{k: True for k, v in legacy.items() if v},
                              **(raw.get("options") or {})}
    cell: CellOutcome = _decode_fields(CellOutcome, raw, where)
    return cell


_NOTICE_OWNER = "wait"  # the stored key of `NoticeVerdict.owner`


def _encode_notice(value: NoticeVerdict) -> dict[str, Any]:
    fields = _encode_fields(value)
    return {(_NOTICE_OWNER if k == "owner" else k): v for k, v in fields.items()}


def _decode_notice(raw: Any, where: str) -> NoticeVerdict:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"should be an object, not {_shown(raw)}")
    if "owner" in raw:
        raise _Invalid(_join(where, "owner"), "is not part of the schema", unknown=True)
    notice: NoticeVerdict = _decode_fields(
        NoticeVerdict, {("owner" if k == _NOTICE_OWNER else k): v for k, v in raw.items()},
        where)
    return notice


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    InstanceEvidence: _encode_instance,
    RunVerdict: _encode_run_verdict,
    FaultRecord: _encode_fault,
    CellOutcome: _encode_cell,
    NoticeVerdict: _encode_notice,
}
_DECODERS: dict[Any, Callable[[Any, str], Any]] = {
    InstanceEvidence: _decode_instance,
    RunVerdict: _decode_run_verdict,
    FaultRecord: _decode_fault,
    CellOutcome: _decode_cell,
    NoticeVerdict: _decode_notice,
}
