"""`graduate compare APP`: is the new implementation of a flow equivalent to the old one?

An app declared with both engines runs on each, on the same inputs, decisions and fault.
What each did to the outside world is then read from the ledger (the rows its
`graduate.effect` calls wrote) and compared instance by instance, the first instance of
one run with the first of the other: which effects landed and how often, in which order,
under which idempotency keys, what was compensated, and how the instance ended. Each
difference is one plain sentence. Differences a team declares allowed (the order of
steps that run in parallel branches) are listed but do not fail the comparison.

This module judges nothing about either engine's run: the checker did (`graduate.check`);
a comparison holds two judged runs side by side.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from graduate.adapters import all_engine_names, describe
from graduate.apps import find_app
from graduate.chaos.faults import POINT_REACHED, none, parse_label
from graduate.check import InstanceVerdict, Verdict
from graduate.config import Settings, load_settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore
from graduate.flow import Flow
from graduate.ledger import EffectRecord, InstanceRecord, Ledger, Outcome
from graduate.runner import Decision, approve_all

DifferenceKind = Literal["count", "order", "key", "outcome"]
KEPT = (Verdict.COMPLETED, Verdict.COMPENSATED)



@dataclass(frozen=True)
class Allowances:
    """Differences a team expects: groups of steps whose relative order may differ (the
    branches of a parallel split run in no fixed order)."""

    order: tuple[frozenset[str], ...] = ()

    @classmethod
    def parse(cls, groups: Sequence[str], flow: Flow) -> Allowances:
        """`["activate,notify"]`: each a comma-separated group of the flow's steps."""
        steps = {s.name for s in flow.steps}
        parsed = []
        for text in groups:
            group = frozenset(name.strip() for name in text.split(",") if name.strip())
            if len(group) < 2:
                raise ConfigError(f"--allow-order {text!r} must name at least two steps, "
                                  "comma-separated, for example activate,notify")
            if unknown := sorted(group - steps):
                raise ConfigError(f"--allow-order {text!r} names {', '.join(unknown)}, not "
                                  f"steps of flow {flow.name!r}; its steps: "
                                  f"{', '.join(s.name for s in flow.steps)}")
            parsed.append(group)
        return cls(tuple(parsed))

    def allows_order(self, first: str, second: str) -> bool:
        return any(first in group and second in group for group in self.order)


@dataclass(frozen=True)
class Side:
    """One implementation's instance: who ran it, how it ended, what it did."""

    engine: str  # as the evidence names it: "temporal-app"
    title: str  # in a sentence: "Temporal", "Celery"
    instance: InstanceRecord
    verdict: InstanceVerdict
    effects: tuple[EffectRecord, ...]  # its ledger rows, in the order they were written
    set_off: bool = False  # it reached the fault point first and the fault fired on it

    @property
    def kept(self) -> bool:
        """The commitment held: the instance completed or was undone, nothing doubled."""
        return self.verdict.verdict in KEPT and not self.verdict.unabsorbed_duplicates

    def landed(self) -> list[EffectRecord]:
        """The calls that changed (or were absorbed by) the outside world."""
        return [e for e in self.effects if e.outcome in (Outcome.APPLIED, Outcome.ABSORBED)]

    def key_shape(self, key: str) -> str:
        """A key with this instance's own values named, so that keys compare across runs
        (each run has business keys of its own)."""
        names = {value: name for value, name in (
            (self.instance.tenant_id, "{tenant_id}"), (self.instance.date, "{date}"),
            (self.instance.entity_id, "{entity_id}"),
            (self.instance.instance_id, "{instance_id}")) if value}
        # One pass, longest value first, whole values only: a short value (the tenant
        # "t") must not match inside a longer one, a word, or a name already put in.
        pattern = "(?<![A-Za-z0-9])(?:{})(?![A-Za-z0-9])".format(
            "|".join(re.escape(v) for v in sorted(names, key=len, reverse=True)))
        shape = re.sub(pattern, lambda m: names[m.group(0)], key) if names else key
        return shape or "no key"


@dataclass(frozen=True)
class Difference:
    """One way the two implementations differ on one instance, in a sentence."""

    instance: int  # the instance's number in its run, from 1
    step: str
    kind: DifferenceKind
    sentence: str
    allowed: bool = False


@dataclass(frozen=True)
class InstancePair:
    number: int
    left: Side
    right: Side
    differences: tuple[Difference, ...]


@dataclass(frozen=True)
class Comparison:
    """Two runs of one app, side by side, and how they differ."""

    app: str
    flow: str
    fault: str  # the fault both ran under, as a matrix cell writes it
    at: str
    runs: tuple[str, str]  # the run ids, left and right
    titles: tuple[str, str]
    pairs: tuple[InstancePair, ...]
    unpaired: str = ""  # why some instances have no counterpart, when they do not
    allowances: Allowances = field(default_factory=Allowances)

    @property
    def faulted(self) -> bool:
        """Whether the runs were under a fault that fires (not the baseline)."""
        return parse_label(self.fault)[0].fires

    @property
    def differences(self) -> tuple[Difference, ...]:
        return tuple(d for pair in self.pairs for d in pair.differences)

    @property
    def unexpected(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if not d.allowed)

    @property
    def equivalent(self) -> bool:
        """No difference beyond the allowed ones, and every instance has its counterpart."""
        return not self.unexpected and not self.unpaired


def pair_instances(left: Sequence[Side], right: Sequence[Side], flow: Flow,
                   allowances: Allowances) -> tuple[tuple[InstancePair, ...], str]:
    """Compare the n-th instance of one run with the n-th of the other, in the order the
    fault caught them: the one that reached its point and set it off, the others at the
    point, those it cut short, those it held up, then the rest. The fault hits whichever
    instance gets there first, not the same number on each engine."""
    ordered = [sorted(side, key=_caught_first) for side in (left, right)]
    pairs = tuple(InstancePair(n, a, b, compare_instance(n, a, b, flow, allowances))
                  for n, (a, b) in enumerate(zip(*ordered, strict=False), 1))
    unpaired = ""
    if len(left) != len(right):
        unpaired = (f"{left[0].title if left else 'one side'} ran {len(left)} instance(s), "
                    f"{right[0].title if right else 'the other'} {len(right)}")
    return pairs, unpaired


def _caught_first(side: Side) -> tuple[int, str]:
    resume = side.verdict.resume
    if side.set_off:
        caught = 0
    elif resume is None:
        caught = 4  # the fault did not touch it
    else:
        caught = 3 if resume.held_up else 2 if resume.interrupted else 1
    return caught, side.instance.instance_id


def compare_instance(number: int, left: Side, right: Side, flow: Flow,
                     allowances: Allowances | None = None) -> tuple[Difference, ...]:
    """Every difference between what `left` and `right` did for one instance."""
    allowances = allowances or Allowances()
    found: list[Difference] = []

    def add(step: str, kind: DifferenceKind, sentence: str, allowed: bool = False) -> None:
        found.append(Difference(number, step, kind, sentence, allowed))

    counts = [Counter(_label(e) for e in side.landed()) for side in (left, right)]
    absorbed = [Counter(_label(e) for e in side.landed() if e.outcome is Outcome.ABSORBED)
                for side in (left, right)]
    for label in _in_flow_order(set(counts[0]) | set(counts[1]), flow):
        if counts[0][label] != counts[1][label]:
            add(label.step, "count",
                f"{_ran(left.title, label, counts[0][label], absorbed[0][label])}; "
                f"{_ran(right.title, label, counts[1][label], absorbed[1][label])}.")
    for label in _in_flow_order(set(counts[0]) & set(counts[1]), flow):
        keys = [sorted({side.key_shape(e.idempotency_key) for e in side.landed()
                        if _label(e) == label}) for side in (left, right)]
        if keys[0] != keys[1]:
            add(label.step, "key",
                f"{left.title} sent {_what(label)} with key {' or '.join(keys[0])}; "
                f"{right.title} with {' or '.join(keys[1])}.")
    firsts = [_first_order(side) for side in (left, right)]
    common = [label for label in firsts[0] if label in firsts[1]]
    for i, earlier in enumerate(common):
        for later in common[i + 1:]:
            if firsts[1].index(later) < firsts[1].index(earlier):
                add(earlier.step, "order",
                    f"{left.title} ran {_what(earlier)} before {_what(later)}; "
                    f"{right.title} after.",
                    allowed=allowances.allows_order(earlier.step, later.step))
    if (left.verdict.verdict, left.kept) != (right.verdict.verdict, right.kept):
        add("", "outcome", f"{_ended(left)}; {_ended(right)}.")
    return tuple(found)


class _Label(NamedTuple):
    """What a call did, whichever attempt made it: a step's effect or its compensation
    (by step, not by effect name: two steps may share an effect)."""

    step: str
    kind: str
    effect: str


def _label(effect: EffectRecord) -> _Label:
    return _Label(effect.step, effect.kind, effect.effect)


def _in_flow_order(labels: set[_Label], flow: Flow) -> list[_Label]:
    """Effects in the flow's order, then compensations in reverse (as they would run)."""
    order = [(s.name, "effect") for s in flow.steps] + [
        (s.name, "compensation") for s in reversed(flow.steps) if s.compensation]
    return sorted(labels, key=lambda label: (
        order.index(label[:2]) if label[:2] in order else len(order), label))


def _first_order(side: Side) -> list[_Label]:
    return list(dict.fromkeys(_label(e) for e in side.landed()))


def _what(label: _Label) -> str:
    return f"{label.effect} (a compensation)" if label.kind == "compensation" else label.effect


_TIMES = {0: "never", 1: "once", 2: "twice"}


def _ran(title: str, label: _Label, count: int, absorbed: int) -> str:
    if not count:
        return f"{title} never ran {_what(label)}"
    note = f" ({absorbed} absorbed by its key)" if absorbed else ""
    return f"{title} ran {_what(label)} {_TIMES.get(count, f'{count} times')}{note}"


def _ended(side: Side) -> str:
    state = side.verdict.verdict.value
    if side.kept:
        return f"{side.title} kept the commitment ({state})"
    if side.verdict.verdict in KEPT:
        return (f"{side.title} did not keep the commitment ({state}, but with "
                f"{side.verdict.unabsorbed_duplicates} repeated effect(s) no key absorbed)")
    return f"{side.title} did not keep the commitment ({state}: {side.verdict.reason or state})"


def sides(title: str, engine: str, verdicts: Sequence[InstanceVerdict],
          ledger: Sequence[EffectRecord],
          instance: Callable[[str], InstanceRecord],
          set_off: Collection[str] = ()) -> list[Side]:
    """One run's instances as sides of a comparison, from its stored evidence; `set_off`
    names the instances the timeline says reached the fault point."""
    return [Side(engine, title, instance(v.instance_id), v,
                 tuple(e for e in ledger if e.instance_id == v.instance_id),
                 set_off=v.instance_id in set_off)
            for v in verdicts]


def _app_engines() -> list[str]:
    """What an app declares for each engine that runs a team's app ("temporal", "celery"),
    the new implementation (the Temporal side) first: sentences read "Temporal ...;
    Celery ..."."""
    described = [describe(name) for name in all_engine_names() if describe(name).runs_app]
    return [d.runs_app for d in sorted(described, key=lambda d: d.side != "temporal")]


def run_comparison(app: str, *, fault: str = none.NAME, at: str | None = None,
                   instances: int = 1, profile: str = "defaults", timeout: float = 90.0,
                   decisions: Mapping[str, Decision] | None = None,
                   allow_order: Sequence[str] = (), settings: Settings | None = None,
                   evidence: Path | None = None) -> Comparison:
    """Run `app` on Temporal and on Celery (it must declare both) with the same
    instances, decisions (a wait `decisions` does not name is approved) and fault, each
    as `graduate.chaos` runs it (judged and stored as evidence), and compare what each
    did. `allow_order` names groups of steps
    ("activate,notify") whose relative order may differ."""
    from graduate.api import chaos

    config = settings or load_settings()
    declared = find_app(config.project_dir, app)
    engines = _app_engines()
    if missing := [e for e in engines if e not in declared.engines]:
        raise ConfigError(f"app {app!r} declares no {' or '.join(missing)} engine; compare "
                          f"runs both, so declare [{declared.where[1:-1]}.{missing[0]}] "
                          f"too ({declared.where} declares: {', '.join(declared.engines)})")
    allowances = Allowances.parse(allow_order, declared.flow)
    answers = {**approve_all(declared.flow), **(decisions or {})}  # unnamed waits: approved
    store = EvidenceStore(evidence or config.evidence_dir)
    ledger = Ledger(config.ledger)
    try:
        runs = []
        for engine in engines:
            result = chaos(app, engine=engine, fault=fault, at=at, instances=instances,
                           profile=profile, timeout=timeout, decisions=answers,
                           settings=config, evidence=store.root)
            if not result.applicable:
                raise ConfigError(f"{fault} does not apply to {app} on {engine}: "
                                  f"{result.reason}; compare under a fault both can take")
            record = store.load_run(result.run_id)
            set_off = {e.instance for e in record.timeline
                       if e.kind == POINT_REACHED.kind and e.instance}
            runs.append((record, sides(describe(record.engine).product, record.engine,
                                       record.verdicts, record.ledger, ledger.instance,
                                       set_off)))
    finally:
        ledger.close()
    (left_record, left), (right_record, right) = runs
    pairs, unpaired = pair_instances(left, right, declared.flow, allowances)
    return Comparison(app=app, flow=declared.flow.name, fault=fault, at=at or "",
                      runs=(left_record.run_id, right_record.run_id),
                      titles=(describe(left_record.engine).product,
                              describe(right_record.engine).product),
                      pairs=pairs, unpaired=unpaired, allowances=allowances)
