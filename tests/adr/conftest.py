"""A user's project with ADRs, and evidence built the way the chaos harness writes it.

Runs are assembled from `graduate.check`'s own verdict types and `judge_run`, so their
shape (fault, instances with verdict/resume/effects, ledger rows, run verdict) follows
`graduate.chaos.harness._store`; each builder argument breaks one property a gate
looks at. Nothing here starts an engine.
"""

from __future__ import annotations

import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graduate.adapters.base import HistoryEvent
from graduate.adr.document import AdrDocument, read_document
from graduate.chaos.faults import parse_plan
from graduate.chaos.profiles import profile_settings
from graduate.check import EffectVerdict, InstanceVerdict, Resume, Verdict, judge_run
from graduate.cli.app import main
from graduate.config import Settings, env_var
from graduate.evidence import EvidenceStore
from graduate.flow import flow_to_dict, load_flow
from graduate.ledger import EffectRecord, Outcome
from graduate.runs.record import (
    CellOutcome,
    EnvironmentRecord,
    FaultRecord,
    FlowRecord,
    InstanceEvidence,
    MatrixRecord,
    MatrixSpecRecord,
    OptionsRecord,
    RunRecord,
)
from graduate.runs.timeline import TimelineEvent
from tests.sample import SAMPLE_FLOW

REPO = Path(__file__).resolve().parents[2]
FLOW = "partner_approval"
STEPS = ("create_record", "request_approval", "activate", "notify")
START = 1_795_581_372.5  # the runs' start on the ledger's (epoch) clock
# The faults the approved gate requires by default, as (fault, versioned).
REQUIRED = (("kill-worker", False), ("restart-server", False), ("stop-worker", False),
            ("deploy-change", True))
# The faults whose passing runs, and nothing else, meet a checklist item.
PROVING = ("double-start", "rollback-rehearsal")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Project:
    """A project folder with pyproject, the sample spike, two hand-written ADRs, and an
    evidence store; `cli` runs `graduate` in it as a user would."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.store = EvidenceStore(root / ".graduate" / "evidence")
        self._capsys = capsys
        self._runs = 0

    # ------------------------------------------------------------------ the CLI

    def cli(self, *args: str) -> Result:
        """`graduate ARGS` through `main()`, so errors become exit codes as for users."""
        self._capsys.readouterr()
        previous = signal.getsignal(signal.SIGTERM)
        argv = sys.argv
        sys.argv = ["graduate", *args]
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.argv = argv
            signal.signal(signal.SIGTERM, previous)
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.code == 0, result.text
        return result

    # ------------------------------------------------------------------ ADR files

    @property
    def spike(self) -> Path:
        return self.root / "spikes" / f"{FLOW}.toml"

    def edit_spike(self, old: str, new: str) -> None:
        text = self.spike.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in the spike"
        self.spike.write_text(text.replace(old, new, 1), encoding="utf-8")

    def adr_path(self, number: int = 3) -> Path:
        return next((self.root / "docs" / "adr").glob(f"{number:04d}-*.md"))

    def adr(self, number: int = 3) -> AdrDocument:
        document = read_document(self.adr_path(number))
        assert document is not None
        return document

    def edit_adr(self, old: str, new: str, number: int = 3) -> None:
        path = self.adr_path(number)
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} is not in {path.name}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    def tick_all(self, number: int = 3) -> None:
        path = self.adr_path(number)
        path.write_text(path.read_text(encoding="utf-8").replace("- [ ] ", "- [x] "),
                        encoding="utf-8")

    # ------------------------------------------------------------------ evidence

    def run(self, *, engine: str = "temporal", fault: str = "kill-worker",
            versioned: bool = False, profile: str = "defaults", instances: int = 1,
            verdict: Verdict = Verdict.COMPLETED, applied: int = 1, exact: bool = True,
            hit: bool = True, applicable: bool = True, fired: bool = True,
            trace_id: str | None = None, flow: str = FLOW,
            wait_deadline: float | None = None) -> str:
        """Store one run and return its id; the defaults make a run that passes. The
        run records the project's spike as it is now, as the flow it ran."""
        self._runs += 1
        run_id = f"r{self._runs:05d}"
        point = None if fault in ("none", "wait-timeout") else "before-effect"
        step = "activate" if point else None
        verdicts = []
        ledger: list[EffectRecord] = []
        for n in range(1, (instances if applicable else 0) + 1):
            iid = f"{flow}-{run_id}-{n:02d}"
            correlation = f"corr-{iid}"
            trace = f"trace-{iid}" if trace_id is None else trace_id
            effects = tuple(EffectVerdict(s, "effect", applied if s == "activate" else 1,
                                          applied if s == "activate" else 1, 0, 0)
                            for s in STEPS)
            resume = (Resume("activate", point, "activate" if exact else "notify", exact,
                             1.5, measured_from="engine: activity_task_started (attempt 2)")
                      if point and fired and hit else None)
            verdicts.append(InstanceVerdict(iid, correlation, trace, verdict, "as built",
                                            verdict.value, effects, resume, 2.0))
            # One row per application the verdict counts, as the harness's ledger has.
            calls = [s for s in STEPS for _ in range(applied if s == "activate" else 1)]
            ledger += [EffectRecord(
                id=len(ledger) + k, run_id=run_id, flow=flow, instance_id=iid, step=s,
                effect=f"system.{s}", kind="effect", attempt=1,
                idempotency_key=f"t:{flow}:{n}:{s}", correlation_id=correlation,
                trace_id=trace, engine=engine, worker_pid=1000, started_at=START + k,
                finished_at=START + k + 0.01, outcome=Outcome.APPLIED)
                for k, s in enumerate(calls, start=1)]
        description = fault if point is None else f"{fault} at {step}:{point}"
        self.store.save_run(RunRecord(
            run_id=run_id, created_at="2026-11-25T04:36:24.194+00:00", started_at=START,
            flow=FlowRecord(name=flow, version=1, source=f"spikes/{FLOW}.toml",
                            definition=flow_to_dict(load_flow(self.spike))),
            engine=engine, profile=profile,
            # What the profile sets, as the engine's effective settings record it.
            settings=profile_settings(profile, engine, self.root),
            fault=FaultRecord.of(
                {**_EVERY_OPTION, "fault": fault, "step": step, "point": point,
                 "versioned": versioned},
                description=description, applicable=applicable,
                fired=fired and applicable,
                reason="" if applicable else "does not apply here"),
            options=OptionsRecord(instances=instances, workers=1, deadline=45.0,
                                  decisions={"approval": "approve"},
                                  wait_deadline=wait_deadline),
            environment=EnvironmentRecord(host={}, packages={}, servers={}, services={}),
            timeline=_timeline(len(verdicts), fired=fired and applicable, point=point),
            instances=tuple(InstanceEvidence(v, _history(v)) for v in verdicts),
            ledger=tuple(ledger), verdict=judge_run(verdicts)))
        return run_id

    def proof_runs(self, **changes: Any) -> list[str]:
        """One passing temporal run of each fault that proves a checklist item (the
        double start, the rollback rehearsal), `changes` applied to each."""
        return [self.run(**{"fault": fault, **changes}) for fault in PROVING]

    def passing_runs(self, **changes: Any) -> list[str]:
        """One passing temporal run per required fault (`changes` applied to each)."""
        return [self.run(**{"fault": fault, "versioned": versioned, **changes})
                for fault, versioned in REQUIRED]

    def matrix(self, run_ids: list[str], *, pending: bool = False,
               flow: str = FLOW) -> str:
        matrix_id = f"m{len(list(self.store.root.glob('matrices/*.json'))) + 1:05d}"
        cells = [CellOutcome(key=f"cell-{rid}", engine="temporal", fault="kill-worker",
                             at=None, profile="defaults", status="done", run_id=rid)
                 for rid in run_ids]
        if pending:
            cells.append(CellOutcome(key="cell-pending", engine="temporal", fault="none",
                                     at=None, profile="defaults", status="pending"))
        spec = MatrixSpecRecord(flow=flow, engines=("temporal",), faults=("kill-worker",),
                                profiles=("defaults",), at=None, instances=1, timeout=45.0,
                                restart_delay=1.0, wait_deadline=5.0)
        self.store.save_matrix(MatrixRecord(matrix_id=matrix_id, flow=flow,
                                            created_at="2026-11-25T04:36:10.209+00:00",
                                            spec=spec, cells=tuple(cells)))
        return matrix_id

    def junit(self, name: str = "crash-resume.xml", *, tests: int = 3, failures: int = 0,
              errors: int = 0, skipped: int = 0) -> str:
        """Write a JUnit report as pytest does; return its path relative to the project."""
        cases = []
        for n in range(tests):
            inner = ("<failure message='boom'/>" if n < failures else
                     "<error message='broken'/>" if n < failures + errors else
                     "<skipped/>" if n < failures + errors + skipped else "")
            cases.append(f"<testcase classname='t' name='test_{n}'>{inner}</testcase>")
        path = self.root / "reports" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "<?xml version='1.0' encoding='utf-8'?><testsuites><testsuite name='pytest' "
            f"tests='{tests}' failures='{failures}' errors='{errors}' skipped='{skipped}'>"
            + "".join(cases) + "</testsuite></testsuites>", encoding="utf-8")
        return f"reports/{name}"

    # ------------------------------------------------------------------ whole steps

    def spiking(self, *run_ids: str) -> None:
        """ADR 0003 for the flow, with `run_ids` (or one passing run) attached, spiking."""
        self.ok("adr", "new", FLOW, "--by", "ann")
        self.ok("adr", "attach", "3", *(run_ids or (self.run(),)))
        self.ok("adr", "promote", "3", "--to", "spiking", "--by", "ann")

    def approved(self) -> None:
        self.spiking(*self.passing_runs())
        self.ok("adr", "promote", "3", "--to", "approved", "--by", "bob")


# A plan as the harness stores it: every registered option of every fault, at its default.
_EVERY_OPTION = parse_plan("none", None, load_flow(SAMPLE_FLOW)).to_dict()


def _timeline(instances: int, *, fired: bool, point: str | None) -> tuple[TimelineEvent, ...]:
    """What the harness's timeline holds for a run like this, in its order."""
    events = [TimelineEvent(0.2, "instances-started", f"{instances} instance(s)")]
    if fired and point:
        events.append(TimelineEvent(1.0, "point-reached", f"at activate:{point}"))
    if fired:
        events += [TimelineEvent(1.01, "fault-fired", "SIGKILL to the worker's group"),
                   TimelineEvent(2.0, "worker-started", "replacement")]
    return (*events, TimelineEvent(6.0, "run-ended", "all finished"))


def _history(verdict: InstanceVerdict) -> tuple[HistoryEvent, ...]:
    """The engine's record of an instance, as far as the gates read it."""
    events = [HistoryEvent(START, "workflow_execution_started")]
    if verdict.resume is not None:
        events.append(HistoryEvent(START + 2.5, "activity_task_started", "attempt 2",
                                   taken_up=True))
    return tuple(events)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Project:
    root = tmp_path / "team"
    (root / "spikes").mkdir(parents=True)
    shutil.copy(SAMPLE_FLOW, root / "spikes" / f"{FLOW}.toml")
    (root / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n',
                                         encoding="utf-8")
    adrs = root / "docs" / "adr"
    adrs.mkdir(parents=True)
    (adrs / "0001-record-architecture-decisions.md").write_text("# 0001\n", encoding="utf-8")
    (adrs / "0002-use-celery.md").write_text("# 0002\n", encoding="utf-8")
    for key in Settings.__dataclass_fields__:
        monkeypatch.delenv(env_var(key), raising=False)
    monkeypatch.setenv("USER", "ci-user")
    monkeypatch.chdir(root)
    return Project(root, capsys)
