"""Evidence for the report tests: small stores written with the real EvidenceStore.

Every run starts from a real run record (`data/run-temporal-kill-worker.json`: the
sample spike on Temporal, worker killed before `activate`, trimmed) and changes only
what a test is about. Verdicts are made with the checker's own types and `judge_run`,
and ledger rows are real `EffectRecord`s, so the files have the shape the harness
writes.
"""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from graduate.check import InstanceVerdict, Resume, Verdict, effect_verdicts, judge_run
from graduate.evidence import EvidenceStore
from graduate.ledger import EffectRecord, Outcome
from graduate.runs.record import MatrixRecord, RunRecord

DATA = Path(__file__).parent / "data"
BASE: dict[str, Any] = json.loads((DATA / "run-temporal-kill-worker.json").read_text())
START = 1_795_581_372.5  # the runs' start on the ledger's (epoch) clock
FAULT_AT = 0.7  # seconds after the start, in every run with a fault
ENGINES = ("temporal", "celery-chain", "celery-state-machine")

Row = tuple[str, str, str, int, float]  # step, kind, outcome, attempt, seconds after start
BEFORE: tuple[Row, ...] = (("create_record", "effect", "applied", 1, 0.55),
                           ("request_approval", "effect", "applied", 1, 0.6))
FULL: tuple[Row, ...] = (*BEFORE, ("activate", "effect", "applied", 2, 10.7),
                         ("notify", "effect", "applied", 1, 10.75))
CALM: tuple[Row, ...] = (*BEFORE, ("activate", "effect", "applied", 1, 0.65),
                         ("notify", "effect", "applied", 1, 0.7))
UNDONE: tuple[Row, ...] = (*BEFORE, ("request_approval", "compensation", "applied", 1, 5.6),
                           ("create_record", "compensation", "applied", 1, 5.65))
TWICE: tuple[Row, ...] = (*BEFORE, ("activate", "effect", "applied", 1, 0.65),
                          ("activate", "effect", "applied", 2, 3.2),
                          ("notify", "effect", "applied", 1, 3.25))
_STATES = {"completed": "completed", "compensated": "compensated", "failed": "failed",
           "lost": "running", "stuck": "running"}
_REASONS = {
    "completed": "every step's effect is in the ledger",
    "compensated": "deadline of approval passed",
    "failed": "step activate failed: Worker exited prematurely; the chain stopped there "
              "and nothing compensates",
    "lost": "nothing holds it any more: the engine reports running after create_record, "
            "request_approval, approval, and no task, timer or workflow is left to move it",
    "stuck": "the engine still holds it (running) but it did not finish before the run's "
             "deadline",
}


@dataclass(frozen=True)
class Instance:
    """One instance of a run: its verdict, and the ledger rows it left."""

    verdict: str = "completed"
    rows: tuple[Row, ...] = FULL
    reason: str = ""


LOST = Instance("lost", BEFORE)
FAILED = Instance("failed", BEFORE)
COMPENSATED = Instance("compensated", UNDONE)
DUPLICATED = Instance("completed", TWICE)


@dataclass(frozen=True)
class CellSpec:
    engine: str
    fault: str
    at: str | None = None
    profile: str = "defaults"
    status: str = "done"  # done, not-applicable, pending
    run_id: str | None = None


@dataclass
class EvidenceBuilder:
    """Writes runs and matrices into an evidence folder, as the harness would."""

    root: Path
    definition: dict[str, Any] = field(
        default_factory=lambda: copy.deepcopy(BASE["flow"]["definition"]))
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def store(self) -> EvidenceStore:
        return EvidenceStore(self.root)

    @property
    def flow_name(self) -> str:
        return str(self.definition["flow"]["name"])

    def run(self, run_id: str, *, engine: str = "temporal", fault: str = "kill-worker",
            at: str | None = "activate:before-effect", profile: str = "defaults",
            instances: Sequence[Instance] = (Instance(),), applicable: bool = True,
            reason: str = "", settings: dict[str, Any] | None = None,
            services: dict[str, Any] | None = None, versioned: bool = False,
            save: bool = True, started_at: float | None = None) -> dict[str, Any]:
        """A run record of `definition` as it is now; `save=False` keeps it out of the
        store (a lost file); `started_at` (epoch seconds) orders runs in time."""
        record = copy.deepcopy(BASE)
        step, _, point = (at or "").partition(":")
        fired = applicable and fault != "none"
        if not applicable:
            instances = ()
        record.update(
            run_id=run_id, engine=engine, profile=profile,
            settings=settings if settings is not None else copy.deepcopy(BASE["settings"]),
            fault={"fault": fault, "step": step or None, "point": point or None,
                   "offset": None, "restart_delay": 1.0, "partition_for": 5.0,
                   "versioned": versioned, "change": "reorder",
                   "description": f"{fault} at {at}" if at else fault,
                   "applicable": applicable, "fired": fired,
                   "reason": reason or ("" if fault != "none" else "no fault planned")},
            flow={**BASE["flow"], "name": self.flow_name, "definition": self.definition},
        )
        if started_at is not None:
            record["started_at"] = started_at
        if services is not None:
            record["environment"]["services"] = services
        verdicts, ledger = [], []
        for number, spec in enumerate(instances, start=1):
            verdict, rows = self._instance(run_id, engine, number, spec, step, point,
                                           hit=fired and fault != "wait-timeout")
            verdicts.append(verdict)
            ledger.extend(rows)
        end = max([t for spec in instances for *_, t in spec.rows], default=1.0) + 0.3
        record["instances"] = [{**asdict(v), "history": BASE["instances"][0]["history"]}
                               for v in verdicts]
        record["ledger"] = [asdict(r) for r in ledger]
        # As the harness writes it: the instances asked for, all of them started.
        record["options"] = {**record["options"], "instances": max(len(verdicts), 1)}
        record["timeline"] = _timeline(fault, applicable, end)
        judged = judge_run(verdicts)
        record["verdict"] = {**asdict(judged), "passed": judged.passed}
        record = dict(json.loads(json.dumps(record, default=str)))
        self.records[run_id] = record
        if save:
            self.store.save_run(RunRecord.from_dict(record))
        return record

    def _instance(self, run_id: str, engine: str, number: int, spec: Instance, step: str,
                  point: str, *, hit: bool) -> tuple[InstanceVerdict, list[EffectRecord]]:
        instance_id = f"{self.flow_name}-{run_id}-{number:02d}"
        correlation, trace = f"corr-{run_id}-{number}", f"trace{run_id}{number:02d}"
        effects = {str(s["step"]): str(s["effect"]) for s in self.definition["nodes"]
                   if "step" in s}
        rows = [EffectRecord(
            id=index, run_id=run_id, flow=self.flow_name, instance_id=instance_id,
            step=name, effect=effects.get(name, f"x.{name}"), kind=kind,  # type: ignore[arg-type]
            attempt=attempt, idempotency_key=f"demo-tenant:{self.flow_name}:{run_id}:{name}",
            correlation_id=correlation, trace_id=trace, engine=engine,
            worker_pid=1000 + (attempt > 1), started_at=START + t, finished_at=START + t + 0.01,
            outcome=Outcome(outcome))
            for index, (name, kind, outcome, attempt, t) in enumerate(spec.rows, start=1)]
        resume = None
        if hit and step:
            after = [r for r in rows if r.started_at >= START + FAULT_AT]
            first = after[0] if after else None
            # As graduate.check does: caught at a wait, going on with the next step is exact.
            steps = [n["step"] for n in self.definition["nodes"] if "step" in n]
            names = [n.get("step") or n.get("wait") or n.get("timer")
                     for n in self.definition["nodes"]]
            following = next((n for n in names[names.index(step) + 1:] if n in steps), None)
            allowed = {step} if point != "during-wait" else {following}
            resume = Resume(
                in_flight=step, point=point,
                resumed_at=None if first is None else (
                    first.step if first.kind == "effect" else f"{first.step} (compensation)"),
                exact=first is not None and first.kind == "effect" and first.step in allowed,
                time_to_resume=None if first is None else first.started_at - START - FAULT_AT)
        finished = spec.verdict in ("completed", "compensated", "failed")
        verdict = InstanceVerdict(
            instance_id=instance_id, correlation_id=correlation, trace_id=trace,
            verdict=Verdict(spec.verdict), reason=spec.reason or _REASONS[spec.verdict],
            engine_state=_STATES[spec.verdict], effects=effect_verdicts(rows), resume=resume,
            time_to_complete=max(t for *_, t in spec.rows) - 0.5 if finished else None)
        return verdict, rows

    def matrix(self, matrix_id: str, cells: Sequence[CellSpec]) -> str:
        """A matrix file over runs already built (or pending cells without one)."""
        outcomes = []
        for cell in cells:
            name = cell.fault
            outcomes.append({
                "key": f"{cell.engine}|{name}@{cell.at or '-'}|{cell.profile}",
                "engine": cell.engine, "fault": cell.fault.partition("+")[0], "at": cell.at,
                "profile": cell.profile, "versioned": "+versioned" in cell.fault,
                "status": cell.status, "run_id": cell.run_id,
                "summary": _summary(self.records[cell.run_id]) if cell.run_id else {},
            })
        self.store.save_matrix(MatrixRecord.from_dict({
            "schema_version": 1, "kind": "matrix", "matrix_id": matrix_id,
            "created_at": "2026-11-25T04:36:10.209+00:00",
            "updated_at": "2026-11-25T04:39:17.106+00:00", "flow": self.flow_name,
            "spec": {"flow": self.flow_name, "engines": list(dict.fromkeys(
                c.engine for c in cells)), "faults": list(dict.fromkeys(
                    c.fault for c in cells)), "profiles": ["defaults"], "at": None,
                     "instances": 1, "timeout": 45.0, "restart_delay": 1.0,
                     "wait_deadline": 5.0},
            "cells": outcomes,
        }))
        return matrix_id


def _timeline(fault: str, applicable: bool, end: float) -> list[dict[str, Any]]:
    if not applicable:
        return []
    events = [(0.5, "instances-started", "1 instance(s)")]
    if fault == "wait-timeout":
        events += [(FAULT_AT, "fault-fired", "nobody answers approval; its deadline is 5s")]
    elif fault != "none":
        events += [(0.62, "signal-sent", "approval=approve to the instance"),
                   (0.65, "fault-point-reached", "at activate:before-effect in pid 1000"),
                   (FAULT_AT, "fault-fired", f"{fault} on worker-1"),
                   (2.0, "worker-started", "worker-2 (pid 1001) replaces worker-1")]
    events.append((end, "run-ended", "all finished"))
    return [{"at": at, "kind": kind, "detail": detail} for at, kind, detail in events]


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    """What `graduate.chaos.matrix.summarise` keeps of a run in the matrix file."""
    verdict = record["verdict"]
    resumes = [i["resume"]["time_to_resume"] for i in record["instances"]
               if i["resume"] and i["resume"]["time_to_resume"] is not None]
    fault = record["fault"]
    return {**verdict["counts"], "instances": len(record["instances"]),
            "applicable": fault["applicable"], "fired": fault["fired"],
            "reason": fault["reason"],
            "unabsorbed_duplicates": verdict["unabsorbed_duplicates"],
            "absorbed_duplicates": verdict["absorbed_duplicates"],
            "hit_by_fault": verdict["hit_by_fault"],
            "resumed_exactly": verdict["resumed_exactly"],
            "median_time_to_resume": statistics.median(resumes) if resumes else None,
            "passed": verdict["passed"], "failures": verdict["failures"]}


@pytest.fixture
def builder(tmp_path: Path) -> EvidenceBuilder:
    return EvidenceBuilder(tmp_path / "evidence")


# The matrix the report tests share: the sample spike on every engine under five faults,
# with the outcomes the engines really show (see the README's demo): Temporal and the
# state machine pass; the chain loses a commitment to a killed worker, leaves one failed
# after a killed pool child and applies an activation twice after a deploy.
FAULTS = ("none", "kill-worker@activate:before-effect", "kill-pool-child@activate:before-effect",
          "stop-worker@activate:after-effect", "wait-timeout")
OUTCOMES: dict[tuple[str, str], Instance | None] = {
    ("temporal", "kill-pool-child"): None,  # not applicable
    ("celery-chain", "kill-worker"): LOST,
    ("celery-chain", "kill-pool-child"): FAILED,
    ("celery-chain", "stop-worker"): DUPLICATED,
}


def matrix_cells(builder: EvidenceBuilder, *, pending_engines: Sequence[str] = (),
                 prefix: str = "r") -> list[CellSpec]:
    """Build the runs of the shared matrix and return its cells."""
    cells = []
    for e_index, engine in enumerate(ENGINES):
        for f_index, item in enumerate(FAULTS):
            fault, _, at = item.partition("@")
            if engine in pending_engines:
                cells.append(CellSpec(engine, fault, at or None, status="pending"))
                continue
            run_id = f"{prefix}{e_index}{f_index}"
            default = (COMPENSATED if fault == "wait-timeout" else
                       Instance(rows=CALM) if fault == "none" else Instance())
            outcome = OUTCOMES.get((engine, fault), default)
            if outcome is None:
                builder.run(run_id, engine=engine, fault=fault, at=at or None,
                            applicable=False,
                            reason="the Temporal worker runs activities in threads of its "
                                   "own process: there is no pool child to kill")
                cells.append(CellSpec(engine, fault, at or None, status="not-applicable",
                                      run_id=run_id))
                continue
            builder.run(run_id, engine=engine, fault=fault, at=at or None,
                        instances=(outcome,))
            cells.append(CellSpec(engine, fault, at or None, run_id=run_id))
    return cells


@pytest.fixture
def full_matrix(builder: EvidenceBuilder) -> str:
    return builder.matrix("mfull", matrix_cells(builder))


@pytest.fixture
def partial_matrix(builder: EvidenceBuilder) -> str:
    """Still running: the state machine's cells have not run yet."""
    return builder.matrix("mpartial", matrix_cells(builder,
                                                   pending_engines=("celery-state-machine",)))


@pytest.fixture
def interrupted_matrix(builder: EvidenceBuilder) -> str:
    """Stopped with Ctrl-C: pending cells, one of them with its run already written (the
    matrix file was not saved after it), and a settled cell whose run file is gone."""
    cells = matrix_cells(builder, pending_engines=("celery-state-machine",))
    builder.run("orphan", engine="celery-state-machine", fault="none", at=None)
    gone = next(i for i, c in enumerate(cells) if c.run_id and c.status == "done"
                and c.engine == "celery-chain" and c.fault == "kill-worker")
    builder.store.run_path(str(cells[gone].run_id)).unlink()
    return builder.matrix("minterrupted", cells)


@pytest.fixture
def fresh_matrix(builder: EvidenceBuilder) -> str:
    """Just started: no cell has run, so not even the flow's definition is known yet."""
    return builder.matrix("mfresh", matrix_cells(builder, pending_engines=ENGINES))
