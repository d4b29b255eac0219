"""A matrix: every combination of engine, fault and profile, one chaos run per cell.

The matrix file in the evidence store is rewritten atomically after every cell, so a
matrix killed or interrupted with Ctrl-C keeps every finished cell, and `--resume`
runs only the cells that have no run yet.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graduate.adapters import check_engine, engine_names
from graduate.chaos.faults import (
    Fault,
    FaultPlan,
    deploy_change,
    fault_names,
    kill_pool_child,
    kill_worker,
    none,
    parse_label,
    parse_plan,
    restart_broker,
    restart_server,
    stop_worker,
    wait_timeout,
)
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.chaos.profiles import load_profiles, require_profile
from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import Flow, Step, load_flow
from graduate.runner import RunOptions, approve_all
from graduate.runs.session import new_run_id, validate_options

DEFAULT_FAULTS = (none.NAME, kill_worker.NAME, kill_pool_child.NAME, stop_worker.NAME,
                  restart_broker.NAME, restart_server.NAME, wait_timeout.NAME)
# Cells written before faults carried their options kept these two as fields.
_LEGACY_OPTIONS = (deploy_change.VERSIONED.name, stop_worker.COLD.name)


@dataclass(frozen=True)
class MatrixSpec:
    flow: str
    engines: tuple[str, ...] = field(default_factory=engine_names)
    # FAULT[+OPTION...][@STEP:POINT]: an option is a flag the fault declares
    faults: tuple[str, ...] = DEFAULT_FAULTS
    profiles: tuple[str, ...] = ("defaults",)
    at: str | None = None  # default fault point for faults given without one
    instances: int = 1
    timeout: float = 90.0
    restart_delay: float = 1.0
    wait_deadline: float = 5.0  # the waits' deadline in wait-timeout cells


@dataclass
class CellOutcome:
    """One cell of a matrix, as planned and then as the matrix file keeps it: enough for
    the summary, and the id of the run that settled it."""

    key: str
    engine: str
    fault: str
    at: str | None
    profile: str
    options: dict[str, Any] = field(default_factory=dict)  # the fault's, when not default
    status: str = "pending"  # pending, done, not-applicable
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The fault with its flags, as the cell's key names it: `stop-worker+cold`."""
        return "+".join((self.fault, *(k for k, v in self.options.items() if v is True)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellOutcome:
        """A cell as a matrix file keeps it, also from before faults had options."""
        values = dict(data)
        options = dict(values.pop("options", None) or {})
        for name in _LEGACY_OPTIONS:
            if values.pop(name, False):
                options[name] = True
        return cls(**values, options=options)


def default_point(flow: Flow) -> str:
    """The step in flight that matters most: the first after the first wait (the
    commitment a human approved), else the first step; paused before its effect."""
    after_wait = False
    for node in flow.nodes:
        if isinstance(node, Step) and (after_wait or not flow.waits):
            return f"{node.name}:before-effect"
        if node in flow.waits:
            after_wait = True
    return f"{flow.steps[0].name}:before-effect"


def plan_cells(flow: Flow, spec: MatrixSpec, project_dir: Path) -> list[CellOutcome]:
    """Every cell of the matrix, validated before any runs."""
    for engine in spec.engines:
        check_engine(engine)
        validate_options(flow, RunOptions(flow=spec.flow, engine=engine,
                                          instances=spec.instances, timeout=spec.timeout))
    known = load_profiles(project_dir)  # each one's settings checked for every engine
    for profile in spec.profiles:
        require_profile(known, profile)
    cells = []
    for engine in spec.engines:
        for item in spec.faults:
            name, _, at = item.partition("@")
            try:
                fault, options = parse_label(name)
            except ConfigError as error:
                raise ConfigError(f"{error}; in --faults, write FAULT[+OPTION][@STEP:POINT] "
                                  f"with FAULT one of: {', '.join(fault_names())}") from error
            point = at or _default_at(flow, fault, spec.at)
            plan = parse_plan(fault, point, flow, restart_delay=spec.restart_delay,
                              options=options)
            for profile in spec.profiles:
                key = f"{engine}|{plan.label}@{point or '-'}|{profile}"
                cells.append(CellOutcome(key=key, engine=engine, fault=fault.name, at=point,
                                         profile=profile, options=options))
    return cells


def _default_at(flow: Flow, fault: Fault, given: str | None) -> str | None:
    if not fault.needs_point:
        return None
    if fault.at_wait and flow.waits:
        return f"{flow.waits[0].name}:during-wait"
    return given or default_point(flow)


def summarise(result: ChaosResult) -> dict[str, Any]:
    """The numbers of one cell, from its verdicts."""
    resumes = [i.resume.time_to_resume for i in result.instances
               if i.resume is not None and i.resume.time_to_resume is not None]
    return {
        **result.verdict.counts,
        "instances": len(result.instances),
        "applicable": result.applicable, "fired": result.fired, "reason": result.reason,
        "unabsorbed_duplicates": result.verdict.unabsorbed_duplicates,
        "absorbed_duplicates": result.verdict.absorbed_duplicates,
        "hit_by_fault": result.verdict.hit_by_fault,
        "resumed_exactly": result.verdict.resumed_exactly,
        "median_time_to_resume": statistics.median(resumes) if resumes else None,
        "passed": result.verdict.passed,
        "failures": list(result.verdict.failures),
    }


def run_matrix(settings: Settings, spec: MatrixSpec, store: EvidenceStore, *,
               resume: str | None = None,
               on_cell: Callable[[CellOutcome, int, int], None] | None = None,
               ) -> tuple[str, list[CellOutcome]]:
    """Run every cell not yet done; return the matrix id and all cells."""
    store.ensure_writable()
    if resume is not None:
        record = store.load_matrix(resume)
        spec = _spec_from_record(record["spec"])
        matrix_id = resume
        outcomes = [CellOutcome.from_dict(c) for c in record["cells"]]
    else:
        flow = load_flow(spec.flow, spikes_dir=settings.spikes_dir)
        matrix_id = f"m{new_run_id()}"
        outcomes = plan_cells(flow, spec, settings.project_dir)
        record = {"matrix_id": matrix_id, "created_at": now_iso(), "flow": flow.name,
                  "spec": asdict(spec)}
    flow = load_flow(spec.flow, spikes_dir=settings.spikes_dir)
    save = _saver(store, matrix_id, record, outcomes)
    save()
    pending = [o for o in outcomes if o.status == "pending"]
    for number, outcome in enumerate(pending, start=1):
        plan = parse_plan(outcome.fault, outcome.at, flow, restart_delay=spec.restart_delay,
                          options=outcome.options)
        result = run_chaos(settings, _options(spec, flow, plan, outcome), store)
        outcome.run_id = result.run_id
        outcome.status = "done" if result.applicable else "not-applicable"
        outcome.summary = summarise(result)
        save()
        if on_cell is not None:
            on_cell(outcome, number, len(pending))
    return matrix_id, outcomes


def _options(spec: MatrixSpec, flow: Flow, plan: FaultPlan,
             cell: CellOutcome) -> ChaosOptions:
    return ChaosOptions(
        run=RunOptions(flow=spec.flow, engine=cell.engine, instances=spec.instances,
                       timeout=spec.timeout, decisions=approve_all(flow)),
        plan=plan, profile=cell.profile,
        wait_deadline=spec.wait_deadline if plan.fault.lets_waits_expire else None,
    )


def _spec_from_record(data: dict[str, Any]) -> MatrixSpec:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in data.items()}
    return MatrixSpec(**values)


def _saver(store: EvidenceStore, matrix_id: str, record: dict[str, Any],
           outcomes: Sequence[CellOutcome]) -> Callable[[], None]:
    def save() -> None:
        store.save_matrix(matrix_id, {**record, "updated_at": now_iso(),
                                      "cells": [asdict(o) for o in outcomes]})
    return save
