"""Which definition of its flow a run ran: what the ADR gates, the reports and the
runbooks count a run for.

A flow's file changes while its evidence stays: a step is renamed, a wait is added. A
run of the definition before speaks for a flow that no longer exists, and mixed with
the runs of the flow as it is it would make one report, under one name, of two flows.
Every run records the definition it ran (`FlowRecord.definition`: under its time scale,
and with its waits shortened if it shortened them), so this module compares it with a
flow as written (`change`), finds the flow as it is now (`current_definition`), and
sorts runs by the definition they ran (`by_definition`). The gates count only the runs
of the current definition; a report shows only those unless asked for all, and then
marks each run's; a runbook cites only those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graduate.errors import ConfigError, GraduateError
from graduate.flow import Flow, flow_to_dict, load_flow
from graduate.runs.record import RunRecord
from graduate.timescale import TimeScale

_SHOWN = 3  # differences named before "and N more"


def change(run: RunRecord, flow: Flow) -> str | None:
    """How the definition `run` ran differs from `flow` (as written, in real time), in
    words (`path: then -> now`, the first few), or None when it ran that definition."""
    recorded = run.flow.definition
    if not recorded:
        return "the run does not record the flow's definition"
    # The harness shortens wait deadlines for wait-timeout runs on purpose (and moves
    # each escalation with its deadline); that is the run's setting, not a change of the
    # flow.
    shortened = run.options.wait_deadline is not None
    differences = _differences(_comparable(_as_run_saw_it(flow, run), shortened),
                               _comparable(recorded, shortened))
    if not differences:
        return None
    more = (f"; and {len(differences) - _SHOWN} more" if len(differences) > _SHOWN
            else "")
    return "; ".join(differences[:_SHOWN]) + more


def ran(run: RunRecord, flow: Flow) -> bool:
    """Whether `run` ran `flow` as written (under whatever time scale it ran)."""
    return change(run, flow) is None


def as_written(run: RunRecord) -> Flow:
    """The definition `run` ran, as its file would have held it: its durations back at
    their real values if it ran under a time scale."""
    flow = run.flow.load()
    scale = run.options.time_scale
    return flow if scale is None else scale.unscaled(flow)


# ---------------------------------------------------------------------------- the current one


@dataclass(frozen=True)
class CurrentDefinition:
    """The definition a flow's runs are counted against, and where it came from."""

    flow: Flow
    where: str  # the file or reference it loaded from, or the run whose definition it is
    # False when the flow no longer loads (its file gone or broken): the newest
    # definition among its runs stands for it, and `why` says what failed.
    loaded: bool = True
    why: str = ""

    def describe(self) -> str:
        """Where the definition comes from, in a sentence for a report."""
        if self.loaded:
            return f"the flow's current definition ({self.where})"
        return (f"the newest definition among its runs ({self.where}), since the flow no "
                f"longer loads: {self.why}")


def current_definition(name: str, runs: Sequence[RunRecord], *,
                       spikes_dir: Path | None = None,
                       project_dir: Path | None = None) -> CurrentDefinition:
    """Flow `name` as it is now: `spikes_dir/NAME.toml`, else the flow file or
    `module:ATTRIBUTE` its newest run recorded (a relative path read from
    `project_dir`); when neither loads, the newest definition among `runs` (which must
    hold at least one run of `name`), marked as such.

    A recorded JSON file is not tried: it is a copy the harness derived for one run (a
    time scale, shortened waits), not the flow's own file."""
    newest = sorted((r for r in runs if r.flow.name == name),
                    key=lambda r: (r.started_at or 0.0, r.created_at))
    places: list[str | Path] = []
    if spikes_dir is not None and (candidate := spikes_dir / f"{name}.toml").exists():
        places.append(candidate)
    if newest and project_dir is not None:
        source = newest[-1].flow.source
        path = Path(source)
        if path.suffix == ".toml":
            places.append(path if path.is_absolute() else project_dir / path)
        elif ":" in source and path.suffix != ".json":
            places.append(source)
    failures = []
    for place in places:
        try:
            flow = load_flow(place)
        except GraduateError as error:
            failures.append(str(error))
            continue
        if flow.name == name:
            return CurrentDefinition(flow, _shown(place, project_dir))
        failures.append(f"{_shown(place, project_dir)} now holds flow {flow.name!r}")
    if not newest:
        raise ConfigError(f"flow {name!r} does not load ({'; '.join(failures) or 'not found'}) "
                          "and no run of it records a definition; give a flow that loads")
    # The newest run's definition; a shortened run's deadlines are the run's own, so it
    # is read from the newest run of that definition that kept them, if one did.
    chosen = next((r for r in reversed(newest) if r.options.wait_deadline is None
                   and _same(newest[-1], _written_or_recorded(r))), newest[-1])
    why = "; ".join(failures) or (
        f"no {name}.toml in {spikes_dir}" if spikes_dir is not None else
        "no project folder to look for it in")
    return CurrentDefinition(as_written(chosen), f"run {chosen.run_id}", loaded=False,
                             why=why)


def _shown(place: str | Path, project_dir: Path | None) -> str:
    if isinstance(place, Path) and project_dir is not None and place.is_relative_to(
            project_dir):
        return str(place.relative_to(project_dir))
    return str(place)


# ---------------------------------------------------------------------------- runs by definition


@dataclass(frozen=True)
class Definition:
    """One definition of a flow, and the runs (by id) that ran it."""

    number: int  # 0: the current definition; older ones from 1, newest first
    runs: tuple[str, ...]
    change: str = ""  # how the current definition differs from this one (older only)

    @property
    def current(self) -> bool:
        return self.number == 0

    @property
    def label(self) -> str:
        return "current definition" if self.current else f"older definition {self.number}"


def by_definition(runs: Sequence[RunRecord], current: Flow) -> tuple[Definition, ...]:
    """`runs` sorted by the definition they ran: the current one first (always, even
    with no run), then each older one, the one with the newest run first."""
    of_current = [r.run_id for r in runs if ran(r, current)]
    # Each older definition as a flow, or as recorded when this graduate can no longer
    # read it as one (a run of a much older release): then only the same record matches.
    older: list[tuple[Flow | dict[str, Any], list[RunRecord]]] = []
    # Newest first, and a run that kept its waits' deadlines before one that shortened
    # them, so that each older definition is known by a run that ran it as written.
    rest = sorted((r for r in runs if r.run_id not in of_current),
                  key=lambda r: (r.options.wait_deadline is not None,
                                 -(r.started_at or 0.0), r.run_id))
    for run in rest:
        group = next((members for known, members in older if _same(run, known)), None)
        if group is not None:
            group.append(run)
            continue
        older.append((_written_or_recorded(run), [run]))
    order = {r.run_id: n for n, r in enumerate(runs)}
    older.sort(key=lambda item: -max(r.started_at or 0.0 for r in item[1]))
    return (Definition(0, tuple(of_current)), *(
        Definition(number, tuple(sorted((r.run_id for r in members), key=order.__getitem__)),
                   change=change(members[0], current) or "")
        for number, (_, members) in enumerate(older, start=1)))


def _same(run: RunRecord, known: Flow | dict[str, Any]) -> bool:
    return ran(run, known) if isinstance(known, Flow) else run.flow.definition == known


def _written_or_recorded(run: RunRecord) -> Flow | dict[str, Any]:
    """The definition `run` ran, as written; as recorded when this graduate can no
    longer read it as a flow (a run of a much older release)."""
    try:
        return as_written(run)
    except GraduateError:
        return run.flow.definition


# ---------------------------------------------------------------------------- comparing


def _as_run_saw_it(flow: Flow, run: RunRecord) -> dict[str, Any]:
    """`flow` in the form a run of it records: under the run's time scale, if it ran
    under one, so that scaled durations are not taken for a change."""
    recorded = run.options.time_scale
    if recorded is None:
        return flow_to_dict(flow)
    try:
        scaled, _ = TimeScale(recorded.factor, recorded.label).apply(flow)
    except GraduateError:  # the flow cannot take that scale: it is not the run's flow
        return flow_to_dict(flow)
    return flow_to_dict(scaled)


def _comparable(definition: dict[str, Any], shortened: bool) -> dict[str, Any]:
    """A definition without what does not change behaviour (the description), and
    without the durations a shortened run moved (a wait's deadline and its escalation's
    time, its effect kept)."""
    flow = {k: v for k, v in (definition.get("flow") or {}).items() if k != "description"}
    nodes = [_unshortened(node) if shortened and isinstance(node, dict) else node
             for node in definition.get("nodes") or []]
    return {**definition, "flow": flow, "nodes": nodes}


def _unshortened(node: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in node.items() if k != "deadline"}
    if isinstance(escalation := node.get("escalation"), dict):
        kept["escalation"] = {k: v for k, v in escalation.items() if k != "after"}
    return kept


def _differences(now: Any, then: Any, path: str = "") -> list[str]:
    """Each place where `then` (the run's flow) differs from `now`, as `path: then -> now`."""
    if isinstance(now, dict) and isinstance(then, dict):
        found = []
        for key in sorted(set(now) | set(then), key=str):
            found += _differences(now.get(key), then.get(key), f"{path}.{key}" if path else key)
        return found
    if (isinstance(now, list) and isinstance(then, list)
            and [_node_name(n) for n in now] == [_node_name(n) for n in then]
            and all(_node_name(n) for n in now)):
        found = []
        for before, after in zip(then, now, strict=True):
            found += _differences(after, before, f"{path}.{_node_name(after)}")
        return found
    if now == then:
        return []
    if isinstance(now, list) and isinstance(then, list):
        return [f"{path}: {_names(then)} -> {_names(now)}"]
    return [f"{path}: {then!r} -> {now!r}"]


def _node_name(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    name = (node.get("step") or node.get("wait") or node.get("timer")
            or node.get("parallel"))
    return str(name) if name else None


def _names(nodes: list[Any]) -> str:
    return ", ".join(_node_name(n) or "?" for n in nodes) or "none"
