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

from graduate.adapters import ENGINES, check_engine
from graduate.chaos.faults import FAULTS, FaultPlan, parse_plan
from graduate.chaos.harness import ChaosOptions, ChaosResult, run_chaos
from graduate.chaos.profiles import load_profiles, require_profile
from graduate.config import Settings
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import Flow, Step, load_flow
from graduate.runner import RunOptions, approve_all, new_run_id

VARIANTS = {("deploy-change", "versioned"), ("stop-worker", "cold")}
DEFAULT_FAULTS = ("none", "kill-worker", "kill-pool-child", "stop-worker", "restart-broker",
                  "restart-server", "wait-timeout")


@dataclass(frozen=True)
class MatrixSpec:
    flow: str
    engines: tuple[str, ...] = ENGINES
    faults: tuple[str, ...] = DEFAULT_FAULTS  # FAULT or FAULT@STEP:POINT
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
    versioned: bool = False
    cold: bool = False
    status: str = "pending"  # pending, done, not-applicable
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


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
    known = load_profiles(project_dir)  # each one's settings checked for every engine
    for profile in spec.profiles:
        require_profile(known, profile)
    cells = []
    for engine in spec.engines:
        for item in spec.faults:
            name, _, at = item.partition("@")
            fault, plus, variant = name.partition("+")
            if fault not in FAULTS or (plus and (fault, variant) not in VARIANTS):
                raise ConfigError(f"unknown fault {name!r} in --faults; choose from: "
                                  f"{', '.join(FAULTS)}, as FAULT[@STEP:POINT] "
                                  "(deploy-change+versioned for the versioning guard, "
                                  "stop-worker+cold for a cold shutdown)")
            point = at or _default_at(flow, fault, spec.at)
            versioned, cold = variant == "versioned", variant == "cold"
            parse_plan(fault, point, flow, versioned=versioned, cold=cold)
            for profile in spec.profiles:
                key = f"{engine}|{name}@{point or '-'}|{profile}"
                cells.append(CellOutcome(key=key, engine=engine, fault=fault, at=point,
                                         profile=profile, versioned=versioned, cold=cold))
    return cells


def _default_at(flow: Flow, fault: str, given: str | None) -> str | None:
    if fault in ("none", "wait-timeout"):
        return None
    if fault == "deploy-change" and flow.waits:
        # A deploy lands while instances are parked at a human wait: the usual window.
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
    if resume is not None:
        record = store.load_matrix(resume)
        spec = _spec_from_record(record["spec"])
        matrix_id = resume
        outcomes = [CellOutcome(**c) for c in record["cells"]]
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
                          versioned=outcome.versioned, cold=outcome.cold)
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
        wait_deadline=spec.wait_deadline if plan.fault == "wait-timeout" else None,
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
