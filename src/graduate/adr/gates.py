"""The gates: what evidence each status needs, following the execution-fabric policy.

- spiking: the flow declares its three classes; at least one run or matrix attached.
- approved: all of that, and the target engine (Temporal by default) passed every
  required fault with nothing lost, stuck or failed, no unabsorbed duplicate, a resume at
  the exact step in flight, including a deploy of changed code under the engine's
  versioning guard; every ledger row carries a correlation ID and a trace ID.
- shipped: all of that, and a passing crash-resume test run (JUnit XML), and every
  item of the ADR's Security gate and Release checklist ticked, except the items a
  fault proves (the double start, the rollback rehearsal): those are met only by a
  passing run of that fault on the target engine attached to the ADR.

Every gate also needs every attached file to match the hash it was pinned with. A run
counts only for the flow it ran: its recorded definition must match the flow file as
it is now, so evidence of an earlier version neither counts nor blocks.
A team can tighten the gates in `[tool.graduate.gates]` of pyproject.toml, never
loosen them: `required_faults` adds to the defaults, and there is no key to drop an
item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from graduate.adapters import engine_names
from graduate.adr.attached import Loaded, load
from graduate.adr.checklists import CHECKLISTS, ChecklistItem
from graduate.adr.document import AdrDocument
from graduate.adr.record import CLOSING, Attachment, Status
from graduate.chaos.faults import (
    POINTS,
    deploy_change,
    fault_names,
    get_fault,
    kill_worker,
    restart_server,
    stop_worker,
)
from graduate.chaos.profiles import Profile, load_profiles
from graduate.check import judge_run, proves_nothing
from graduate.config import graduate_subtable
from graduate.errors import ConfigError, GraduateError
from graduate.flow import Flow, load_flow
from graduate.runs import definitions
from graduate.runs.record import RunRecord

_SHOWN = 5  # problems of one kind listed before "and N more"


@dataclass(frozen=True)
class FaultRequirement:
    """A fault the target engine must pass, optionally at one step and point."""

    fault: str
    step: str | None = None
    point: str | None = None

    def describe(self) -> str:
        return get_fault(self.fault).requirement(
            f" at {self.step}:{self.point}" if self.step else "")

    def matches(self, run: RunRecord) -> bool:
        fault = run.fault
        return (fault.fault == self.fault
                and (self.step is None or fault.step == self.step)
                and (self.point is None or fault.point == self.point)
                and get_fault(self.fault).proves(fault.options))


DEFAULT_REQUIRED_FAULTS = (
    FaultRequirement(kill_worker.NAME),
    FaultRequirement(restart_server.NAME),
    FaultRequirement(stop_worker.NAME),
    FaultRequirement(deploy_change.NAME),
)
GATE_KEYS = ("target_engine", "required_faults", "min_instances", "require_profiles")


@dataclass(frozen=True)
class GatePolicy:
    """What the approved and shipped gates ask of the evidence."""

    target_engine: str = "temporal"
    required_faults: tuple[FaultRequirement, ...] = DEFAULT_REQUIRED_FAULTS
    min_instances: int = 1  # per run that counts
    require_profiles: tuple[str, ...] = ()  # each required fault in each; () = any

    def describe(self, target: Status) -> str:
        """The policy as the gate for `target` applied it, for the ADR's history."""
        if target in (Status.PLANNED, Status.SPIKING) or target in CLOSING:
            return f"{target}: the classes declared, some evidence attached"
        faults = ", ".join(r.describe() for r in self.required_faults)
        profiles = ", ".join(self.require_profiles) or "any"
        shipped = "; a passing JUnit run, checklists ticked" if target is Status.SHIPPED else ""
        return (f"{target}: {self.target_engine} survived {faults}; at least "
                f"{self.min_instances} instance(s) per run; profiles {profiles}; trace IDs "
                f"on every row{shipped}")


@dataclass(frozen=True)
class GateItem:
    """One thing a gate asks; met when it has no problems."""

    name: str
    title: str
    problems: tuple[str, ...] = ()

    @property
    def met(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GateResult:
    target: Status
    items: tuple[GateItem, ...]

    @property
    def unmet(self) -> tuple[GateItem, ...]:
        return tuple(item for item in self.items if not item.met)

    @property
    def passed(self) -> bool:
        return not self.unmet


# ---------------------------------------------------------------------------- policy


def load_policy(project_dir: Path) -> GatePolicy:
    """The gates, tightened by `[tool.graduate.gates]` in the project's pyproject.toml."""
    table, where = graduate_subtable(project_dir, "gates")
    if table is None:
        return GatePolicy()
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    table = {key.replace("-", "_"): value for key, value in table.items()}
    if unknown := sorted(set(table) - set(GATE_KEYS)):
        raise ConfigError(f"{where} has unknown key(s) {unknown}; gates can be tightened, "
                          f"never loosened, with: {', '.join(GATE_KEYS)}")
    policy = GatePolicy()
    target = table.get("target_engine", policy.target_engine)
    if target not in engine_names():
        raise ConfigError(f"{where}: target_engine = {target!r} must be one of "
                          f"{', '.join(engine_names())}")
    minimum = table.get("min_instances", policy.min_instances)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 1:
        raise ConfigError(f"{where}: min_instances = {minimum!r} must be a whole number "
                          "from 1 up")
    profiles = _strings(table.get("require_profiles", []), f"{where}: require_profiles")
    known = load_profiles(project_dir)
    for profile in profiles:
        if profile not in known:
            raise ConfigError(f"{where}: require_profiles names {profile!r}; profiles: "
                              f"{', '.join(known)}")
    extra = [_requirement(item, where)
             for item in _strings(table.get("required_faults", []),
                                  f"{where}: required_faults")]
    # The defaults always stay: a list that leaves one out still requires it.
    required = list(DEFAULT_REQUIRED_FAULTS)
    required += [r for r in extra if r not in required]
    return GatePolicy(target_engine=target, required_faults=tuple(required),
                      min_instances=minimum, require_profiles=tuple(dict.fromkeys(profiles)))


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings, e.g. [\"{kill_worker.NAME}\"]")
    return list(value)


def _requirement(item: str, where: str) -> FaultRequirement:
    fault, sep, at = item.partition("@")
    if fault not in fault_names():
        raise ConfigError(f"{where}: required_faults names {fault!r}; faults: "
                          f"{', '.join(fault_names())} (optionally FAULT@STEP:POINT)")
    if not sep:
        return FaultRequirement(fault)
    step, colon, point = at.partition(":")
    if not step or not colon or point not in POINTS:
        raise ConfigError(f"{where}: {item!r} must read FAULT or FAULT@STEP:POINT with "
                          f"POINT one of {', '.join(POINTS)}")
    return FaultRequirement(fault, step, point)


# ---------------------------------------------------------------------------- evaluation


def evaluate(document: AdrDocument, target: Status, policy: GatePolicy,
             project_dir: Path) -> GateResult:
    """The gate for moving `document` to `target` (or for staying at it), item by item."""
    record = document.record
    loaded = load(record, project_dir)
    items = [GateItem("intact", "every attached file matches the hash it was pinned with",
                      loaded.problems)]
    if target is Status.PLANNED or target in CLOSING:
        return GateResult(target, tuple(items))
    try:
        flow: Flow | GraduateError = load_adr_flow(record.flow_source, project_dir)
    except GraduateError as error:
        flow = error  # the classes item says so; runs cannot be compared with it
    items += [_classes(document, flow), _some_evidence(record.evidence)]
    if target in (Status.APPROVED, Status.SHIPPED):
        stale = _stale_runs(loaded, flow, load_profiles(project_dir))
        items += [_fault(document, requirement, policy, loaded, stale)
                  for requirement in policy.required_faults]
        items.append(_trace_ids(loaded, stale))
    if target is Status.SHIPPED:
        items.append(_junit(document, loaded))
        items += [_checklist(document, heading, defaults, policy, loaded, stale)
                  for heading, defaults in CHECKLISTS]
    return GateResult(target, tuple(items))


def load_adr_flow(source: str, project_dir: Path) -> Flow:
    """The flow an ADR is about, from its recorded source."""
    path = Path(source)
    if not path.is_absolute():
        path = project_dir / path
    return load_flow(path if path.suffix in (".toml", ".json") else source)


def _classes(document: AdrDocument, flow: Flow | GraduateError) -> GateItem:
    title = "the flow declares approval_class, reversibility_class and sensitivity_class"
    record = document.record
    if isinstance(flow, GraduateError):
        return GateItem("classes", title, (f"the flow at {record.flow_source} does not load: "
                                           f"{flow}",))
    problems = []
    if flow.name != record.flow:
        problems.append(f"{record.flow_source} now holds flow {flow.name!r}, not "
                        f"{record.flow!r}; point flow_source at the right file")
    for key, declared in record.classes.items():
        actual = str(getattr(flow, key))
        if actual != declared:
            problems.append(f"{key} is {actual} in the flow but {declared} in the ADR; the "
                            f"decision was written for {declared}: review it and set "
                            f"{key} = \"{actual}\" in the front block")
    return GateItem("classes", title, tuple(problems))


def _some_evidence(evidence: Sequence[Attachment]) -> GateItem:
    title = "at least one run or matrix attached"
    if any(a.kind in ("run", "matrix") for a in evidence):
        return GateItem("evidence", title)
    return GateItem("evidence", title, (
        "nothing from the evidence store is attached; run `graduate matrix FLOW` or "
        "`graduate chaos FLOW ...`, then `graduate adr attach ADR ID`",))


def _fault(document: AdrDocument, requirement: FaultRequirement, policy: GatePolicy,
           loaded: Loaded, stale: Mapping[str, str]) -> GateItem:
    engine = policy.target_engine
    profiles = policy.require_profiles
    where = f" in profile(s) {', '.join(profiles)}" if profiles else ""
    name = f"fault:{requirement.fault}" + (
        f"@{requirement.step}:{requirement.point}" if requirement.step else "")
    title = (f"{engine} survived {requirement.describe()}{where}: nothing lost, stuck or "
             "failed, no unabsorbed duplicate, resumed at the exact step")
    runs = [(a, run) for a, run in loaded.runs
            if run.engine == engine and requirement.matches(run)]
    problems: list[str] = []
    for attachment, run in runs:
        # A run of an earlier definition of the flow is superseded, not held against it.
        if attachment.id not in stale:
            problems += [f"run {attachment.id} ({run.profile}): {p}"
                         for p in failures(run)]
    for profile in profiles or (None,):
        candidates = [(a, r) for a, r in runs if profile is None or r.profile == profile]
        counted = [a for a, r in candidates
                   if _uncounted(r, policy, stale.get(a.id)) is None]
        if counted:
            continue
        notes = "".join(f"; run {a.id} does not count: "
                        f"{_uncounted(r, policy, stale.get(a.id))}"
                        for a, r in candidates)
        in_profile = f" in profile {profile}" if profile else ""
        flag = "".join(f" --{name}" for name, value in
                       get_fault(requirement.fault).proven_with.items() if value is True)
        at = f"{requirement.step}:{requirement.point}" if requirement.step else "STEP:POINT"
        problems.append(
            f"no attached {engine} run of {requirement.describe()}{in_profile} that counts"
            f"{notes}. Run `graduate chaos {document.record.flow} -e {engine} --fault "
            f"{requirement.fault} --at {at}{flag}` and attach it")
    return GateItem(name, title, tuple(problems))


def failures(run: RunRecord) -> list[str]:
    """What a run shows going wrong, as the checker judges its instances now
    (`graduate.check.judge_run`); a run stored as failed stays failed."""
    found = list(judge_run(run.verdicts, not_started=run.not_started).failures)
    if not found and not run.verdict.passed:
        found += list(run.verdict.failures) or ["the run did not pass"]
    return found


def _uncounted(run: RunRecord, policy: GatePolicy,
               stale: str | None) -> str | None:
    """Why a run that did not fail still proves nothing, or None when it counts;
    `stale` says why the run no longer speaks for the flow, if it does not."""
    fault = run.fault
    instances = run.verdicts
    if stale is not None:
        return stale
    if not fault.applicable:
        return f"the fault does not apply ({fault.reason or 'no reason given'})"
    facts = fault.facts()
    if facts.planned and not facts.fired:
        return proves_nothing(facts, 0)
    if len(instances) < policy.min_instances:
        return (f"it ran {len(instances)} instance(s); the gate asks for at least "
                f"{policy.min_instances}")
    if (nothing := proves_nothing(facts, sum(1 for i in instances if i.resume))):
        return nothing
    if failures(run):
        return "it failed"
    return None


# ---------------------------------------------------------------------------- flow changes


def stale_runs(document: AdrDocument, loaded: Loaded, project_dir: Path) -> dict[str, str]:
    """The ADR's attached runs that no longer speak for its flow as it is now, by id,
    with the reason: what the gates leave out, for anyone else counting its runs."""
    try:
        flow: Flow | GraduateError = load_adr_flow(document.record.flow_source, project_dir)
    except GraduateError as error:
        flow = error  # nothing to compare a run's definition with
    return _stale_runs(loaded, flow, load_profiles(project_dir))


def _stale_runs(loaded: Loaded, flow: Flow | GraduateError,
                profiles: Mapping[str, Profile]) -> dict[str, str]:
    """Attached runs that no longer speak for the flow as it is now (another definition
    of it, or a profile whose settings changed since), by id, with the reason."""
    stale = {}
    current = None if isinstance(flow, GraduateError) else flow
    for attachment, run in loaded.runs:
        if (reason := _staleness(run, current, profiles)) is not None:
            stale[attachment.id] = reason
    return stale


def _staleness(run: RunRecord, current: Flow | None,
               profiles: Mapping[str, Profile]) -> str | None:
    # Nothing to compare the run's definition with when the flow does not load.
    if current is not None and (change := definitions.change(run, current)) is not None:
        return (f"it ran another definition of the flow ({change}); run the fault "
                "again on the flow as it is now")
    profile = profiles.get(run.profile)
    if profile is None:
        return None  # a profile since removed: the run's settings are on record
    recorded = run.settings
    changed = [f"{key} = {recorded.get(key)!r}, now {value!r}"
               for key, value in profile.settings(run.engine).items()
               if recorded.get(key) != value]
    if changed:
        return (f"profile {profile.name} has changed since it ran ({'; '.join(changed)}); "
                "run the fault again with the profile as it is now")
    return None


def _trace_ids(loaded: Loaded, stale: Mapping[str, str]) -> GateItem:
    title = "every ledger row of the attached runs carries a correlation_id and a trace_id"
    missing: list[str] = []
    rows = 0
    for attachment, run in loaded.runs:
        if attachment.id in stale:
            continue  # superseded: it neither counts nor blocks
        for row in run.ledger:
            rows += 1
            absent = [name for name, value in (("correlation_id", row.correlation_id),
                                               ("trace_id", row.trace_id)) if not value]
            if absent:
                missing.append(f"run {attachment.id}, ledger row {row.id} "
                               f"({row.step}): no {' and no '.join(absent)}")
    if not rows:
        return GateItem("trace-ids", title, ("the attached runs have no ledger rows to show "
                                             "it",))
    return GateItem("trace-ids", title, tuple(_cap(missing)))


def _junit(document: AdrDocument, loaded: Loaded) -> GateItem:
    title = ("a passing crash-resume test run (JUnit XML: tests ran, none failed, errored "
             "or was skipped)")
    if not loaded.junits:
        return GateItem("junit", title, (
            "no JUnit report attached; run the crash-resume suite with `pytest "
            "--junitxml=FILE` and `graduate adr attach "
            f"{document.record.number} FILE`",))
    return GateItem("junit", title, tuple(
        f"{attachment.id}: {summary.describe()}" for attachment, summary in loaded.junits
        if not summary.passed))


def _checklist(document: AdrDocument, heading: str, defaults: Sequence[ChecklistItem],
               policy: GatePolicy, loaded: Loaded, stale: Mapping[str, str]) -> GateItem:
    name = heading.lower().replace(" ", "-")
    proven = {item.label.lower(): item for item in defaults if item.proven_by}
    title = f"every item of the {heading} ticked" + (
        f" ({', '.join(i.label for i in proven.values())}: proven by evidence)"
        if proven else "")
    tasks = document.tasks(heading)
    if tasks is None:
        return GateItem(name, title, (f"the ADR has no '## {heading}' section; restore it "
                                      "(docs/adr-lifecycle.md lists its items)",))
    labels = {t.label.lower() for t in tasks}
    problems = [f"'{item.label}' was removed; the default items stay (add items, do not "
                "remove them)" for item in defaults if item.label.lower() not in labels]
    problems += [f"not ticked: {t.label}" for t in tasks
                 if not t.done and t.label.lower() not in proven]
    for item in proven.values():
        if item.label.lower() in labels and item.proven_by is not None and (
                missing := _unproven(document, item.proven_by, policy, loaded, stale)):
            problems.append(f"'{item.label}' is met by evidence only, not by a tick: {missing}")
    return GateItem(name, title, tuple(problems))


def _unproven(document: AdrDocument, fault: str, policy: GatePolicy, loaded: Loaded,
              stale: Mapping[str, str]) -> str | None:
    """Why no attached run of `fault` on the target engine proves its checklist item, or
    None when one does (it passed, fired, and speaks for the flow as it is now)."""
    engine = policy.target_engine
    requirement = FaultRequirement(fault)
    runs = [(a, run) for a, run in loaded.runs
            if run.engine == engine and requirement.matches(run)]
    if any(_uncounted(run, policy, stale.get(a.id)) is None for a, run in runs):
        return None
    notes = "".join(f"; run {a.id} does not count: {_uncounted(run, policy, stale.get(a.id))}"
                    for a, run in runs)
    return (f"no attached {engine} run of {requirement.describe()} that passed{notes}. Run "
            f"`graduate chaos {document.record.flow} -e {engine} --fault {fault} --at "
            "STEP:POINT` and attach it")


def _cap(problems: list[str]) -> list[str]:
    if len(problems) <= _SHOWN:
        return problems
    return [*problems[:_SHOWN], f"and {len(problems) - _SHOWN} more"]

