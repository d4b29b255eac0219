"""`graduate bench`: what graduate costs, how a matrix spends its time, how far one
machine goes. Four sections, each optional:

- `effect`: `graduate.effect` outside a run (per call, against a bare call), and
  recording a call inside one (the ledger's write, against a plain SQLite insert);
- `overhead`: the flow through graduate's adapter and the same flow written directly
  with the engine's SDK (`graduate.adapters.plain`), side by side on the same servers,
  repeated: flows per second and per-step latency as ratios with their spread;
- `matrix`: the demo's crash matrix (as `graduate demo` runs it), its wall time split
  into the engines' recovery, waiting for a deadline, and the harness; then a matrix
  under `defaults` and `tuned` for the time to resume per engine, fault and profile;
- `scale`: a worker killed and the broker or server restarted among many instances of
  a generated flow, grown by instances and by steps per flow (`bench.scale`): lost,
  duplicated, time to finish, and the harness's own peak memory.

Every ratio is measured side by side in one bench; absolute times are labelled with
the machine they came from (`environment.host()`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import graduate
from graduate.adapters import check_engine, engine_names, needs, open_plain, plain_modules
from graduate.adapters.base import services_for_worker
from graduate.adapters.plain import (
    PlainSpec,
    create_database,
    drive,
    plain_deadlines,
    plain_nodes,
)
from graduate.bench.measure import FlowSample, Spread, sample
from graduate.bench.scale import MIN_STEPS, SCALE_FAULT, scale_runs
from graduate.chaos.faults import (
    FAULT_FIRED,
    kill_worker,
    restart_broker,
    restart_server,
    stop_worker,
)
from graduate.chaos.matrix import (
    DEFAULT_INSTANCES,
    DEMO_FAULTS,
    DEMO_FLOW,
    DEMO_TIMEOUT,
    demo_jobs,
)
from graduate.config import Settings
from graduate.environment import host
from graduate.errors import ConfigError
from graduate.evidence import EvidenceStore, now_iso
from graduate.flow import MAX_SECONDS, Flow, InstanceRequest, Step, check_seconds, load_flow
from graduate.instrument import RunContext, effect
from graduate.ledger import Ledger
from graduate.runner import RunOptions, approve_all, run_flow
from graduate.runs.session import new_request
from graduate.runs.timeline import INSTANCES_STARTED, RUN_ENDED
from graduate.services.provider import open_stack

SECTIONS = ("effect", "overhead", "matrix", "scale")


def bench_evidence(settings: Settings) -> Path:
    """Where the bench's chaos runs keep their evidence: apart from the project's, which
    holds the runs a team decides on."""
    return settings.state_dir / "bench" / "evidence"
Progress = Callable[[str, int, int], None]  # (what is running, steps done, steps in all)


@dataclass(frozen=True)
class BenchOptions:
    flow: str = "partner_approval"
    sections: tuple[str, ...] = SECTIONS
    # overhead: engines with a plain baseline, instances per run, runs per side
    engines: tuple[str, ...] = field(default_factory=lambda: tuple(plain_modules()))
    # 100: with 20, a Celery run lasts under a second and a ratio's spread was 0.6-0.9
    # on a quiet machine; with 100, within 0.02 for the chain and Temporal.
    instances: int = 100
    repeats: int = 3
    # matrix: faults and profiles, instances per cell
    matrix_engines: tuple[str, ...] = field(default_factory=engine_names)
    matrix_faults: tuple[str, ...] = (kill_worker.NAME, stop_worker.NAME, restart_broker.NAME,
                                      restart_server.NAME)
    profiles: tuple[str, ...] = ("defaults", "tuned")
    matrix_instances: int = 3
    # scale: instances per run (with the fewest steps), steps per flow (with the fewest
    # instances); a scale run's deadline is `timeout` plus `scale_per_instance` a instance
    scale: tuple[int, ...] = (100, 1000, 5000)
    scale_steps: tuple[int, ...] = (4, 8, 16)
    scale_engines: tuple[str, ...] = field(default_factory=engine_names)
    scale_per_instance: float = 1.0
    timeout: float = 300.0  # each run's deadline

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in SECTIONS]
        if not self.sections:
            raise ConfigError(f"give at least one bench section: {', '.join(SECTIONS)}")
        if unknown:
            raise ConfigError(f"no bench section {', '.join(unknown)}; the sections are "
                              f"{', '.join(SECTIONS)}")
        for name in self.engines:
            if name not in plain_modules():
                raise ConfigError(f"engine {name!r} has no plain baseline to bench against; "
                                  f"give --engine {' or '.join(plain_modules())}")
        if min(self.instances, self.repeats, self.matrix_instances, *self.scale, 1) < 1:
            raise ConfigError("instances, repeats and scale sizes must be 1 or more")
        if not self.scale or not self.scale_steps:
            raise ConfigError("give at least one scale size and one number of steps")
        if min(self.scale_steps) < MIN_STEPS:
            raise ConfigError(f"--scale-steps: a scale flow needs {MIN_STEPS} steps or more "
                              "(two before the approval wait, one after it)")
        for engine in (*self.matrix_engines, *self.scale_engines):
            check_engine(engine)
        check_seconds(self.scale_per_instance, "--scale-per-instance", "1", error=ConfigError)
        if self.scale_per_instance < 0:
            raise ConfigError("--scale-per-instance must be 0 or more seconds")
        check_seconds(self.timeout, "--timeout", "300", error=ConfigError)
        if self.timeout <= 0:
            raise ConfigError("--timeout must be a positive number of seconds")
        longest = self.timeout + self.scale_per_instance * max(self.scale)
        if "scale" in self.sections and longest > MAX_SECONDS:
            # Refused now: each scale run would fail on it, and the bench would then write
            # those failures over the results measured before.
            raise ConfigError(
                f"--scale {max(self.scale)} instances at --scale-per-instance "
                f"{self.scale_per_instance:g} s each, after --timeout {self.timeout:g}, make "
                f"a run's deadline of {longest:g} s, longer than graduate waits "
                f"({MAX_SECONDS / 86400:g} days); give fewer instances or a smaller "
                "--scale-per-instance")

    def steps(self) -> int:
        """How many measurements the bench takes, for a progress bar."""
        counts = {
            "effect": 2,
            "overhead": 2 * len(self.engines) * (self.repeats + 1),  # and a warm-up
            "matrix": len(self.matrix_engines) * (len(DEMO_FAULTS) + len(self.matrix_faults)
                                                  * len(self.profiles)),
            "scale": len(self.scale_engines) * (len(set(self.scale))
                                                + len(set(self.scale_steps)) - 1),
        }
        return sum(counts[s] for s in self.sections)


def run_bench(settings: Settings, options: BenchOptions, *,
              on_progress: Progress | None = None) -> dict[str, Any]:
    """Run the chosen sections; the results as JSON-ready data (see `bench.report`)."""
    total = options.steps()
    done = [0]

    def step(what: str) -> None:
        if on_progress is not None:
            on_progress(what, done[0], total)
        done[0] += 1

    flow = load_flow(options.flow, spikes_dir=settings.spikes_dir)
    results: dict[str, Any] = {
        "created_at": now_iso(), "host": host(), "flow": flow.name,
        # Other developers' work shares the cores: how loaded they were (1, 5, 15 min).
        "load_at_start": list(os.getloadavg()),
        # Only the measured sections' options: a report keeps other sections from an
        # earlier bench, with that bench's options (`bench.report.merged`).
        "options": {key: value for section, chosen in _options_by_section(options).items()
                    if section in options.sections for key, value in chosen.items()},
    }
    if "effect" in options.sections:
        results["effect"] = effect_cost(flow, step)
    if "overhead" in options.sections:
        results["overhead"] = {engine: adapter_overhead(settings, flow, engine, options, step)
                               for engine in options.engines}
    if "matrix" in options.sections:
        results["matrix"] = matrix_time(settings, options, step)
    if "scale" in options.sections:
        results["scale"] = scale_runs(
            settings, bench_evidence(settings), options.scale_engines, options.scale,
            options.scale_steps, timeout=options.timeout,
            per_instance=options.scale_per_instance, step=step)
    results["load_at_end"] = list(os.getloadavg())
    results["measured"] = {section: {"at": results["created_at"], "host": results["host"],
                                     "load": [results["load_at_start"][0],
                                              results["load_at_end"][0]]}
                           for section in SECTIONS if section in results}
    if on_progress is not None:
        on_progress("done", total, total)
    return results


def _options_by_section(options: BenchOptions) -> dict[str, dict[str, Any]]:
    """Which options shape which section."""
    return {"overhead": {"instances": options.instances, "repeats": options.repeats,
                         "overhead_timeout": options.timeout},
            "matrix": {"matrix_faults": list(options.matrix_faults),
                       "profiles": list(options.profiles),
                       "matrix_instances": options.matrix_instances,
                       "matrix_timeout": options.timeout},
            "scale": {"scale": list(options.scale), "scale_steps": list(options.scale_steps),
                      "scale_fault": SCALE_FAULT, "scale_timeout": options.timeout,
                      "scale_per_instance": options.scale_per_instance},
    }


# ---------------------------------------------------------------------------- effect

CALLS = 100_000
LEDGER_CALLS = 300


def _bare(order: str) -> str:
    return order


def _wrapped(order: str) -> str:
    with effect("partner_portal.activate", key=order):
        return _bare(order)


def effect_cost(flow: Flow, step: Callable[[str], None]) -> dict[str, Any]:
    """`graduate.effect` outside a run, and what recording a call costs inside one."""
    step("graduate.effect outside a run")
    if RunContext.from_environ(os.environ) is not None:
        raise ConfigError("unset the GRADUATE_RUN_* variables: the bench measures "
                          "graduate.effect outside a run")

    def best(call: Callable[[], object]) -> float:
        return min(timeit.repeat(call, number=CALLS, repeat=5)) / CALLS * 1e6

    bare = best(lambda: _bare("p-1"))
    wrapped = best(lambda: _wrapped("p-1"))
    step("recording a call in the ledger")
    with tempfile.TemporaryDirectory(prefix="graduate-bench-") as folder:
        ledger_ms, plain_ms = _ledger_against_insert(flow, Path(folder))
    return {"outside_bare_us": bare, "outside_wrapped_us": wrapped,
            "outside_overhead_us": wrapped - bare, "outside_target_us": 2.0,
            "inside_ledger_ms": ledger_ms, "inside_plain_insert_ms": plain_ms,
            "inside_ratio": ledger_ms / plain_ms}


def _ledger_against_insert(flow: Flow, folder: Path) -> tuple[float, float]:
    """Milliseconds per call: the ledger recording a step's effect (what a run's
    `graduate.effect` and the model's effects do), and a plain committed insert."""
    ledger = Ledger(str(folder / "ledger.sqlite3"))
    step = next(s for s in flow.nodes if isinstance(s, Step))
    requests: list[InstanceRequest] = []
    for number in range(LEDGER_CALLS):
        request = new_request(flow, "bench", number, "bench")
        ledger.register(flow, request, "bench")
        requests.append(request)
    start = time.perf_counter()
    for request in requests:
        ledger.call(flow, request, step, attempt=1, engine="bench")
    ledger_ms = (time.perf_counter() - start) / LEDGER_CALLS * 1e3
    connection = sqlite3.connect(folder / "plain.sqlite3")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE effects (instance TEXT, step TEXT, at REAL)")
    start = time.perf_counter()
    for request in requests:
        connection.execute("INSERT INTO effects VALUES (?, ?, ?)",
                           (request.instance_id, step.name, time.time()))
        connection.commit()
    plain_ms = (time.perf_counter() - start) / LEDGER_CALLS * 1e3
    connection.close()
    return ledger_ms, plain_ms


# ---------------------------------------------------------------------------- overhead


def adapter_overhead(settings: Settings, flow: Flow, engine: str, options: BenchOptions,
                     step: Callable[[str], None]) -> dict[str, Any]:
    """graduate's adapter and the plain SDK on the same servers, alternately, each
    `options.repeats` times: the ratios graduate/plain per pair, with their spread."""
    nodes = plain_nodes(flow)
    pairs: list[tuple[FlowSample, FlowSample]] = []
    # graduate's ledger and state-machine tables new for the section, as the plain side's
    # table is for each run: the project's own grow with every run and bench (tens of MB
    # after a session), and a larger SQLite file costs each write more. A URL the user
    # gave is kept: then the bench measures what they run on.
    folder = settings.state_dir / "bench" / f"overhead-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True)
    settings = replace(settings, ledger_url=settings.ledger_url or str(folder / "ledger.sqlite3"),
                       app_db_url=settings.app_db_url or str(folder / "app.sqlite3"))
    with open_stack(settings, needs([engine]), use_kept=False) as stack:
        # One run of each side first, not measured: the first run on a new server (its
        # tables, caches, the worker's imports) was the slowest of either side by up to
        # half, which measured the servers' warm-up rather than either side.
        for side in (_graduate_sample, _plain_sample):
            step(f"{engine}: {_side_name(side)} warm-up run (not measured)")
            side(settings, flow, nodes, engine, stack, options)
        for repeat in range(options.repeats):
            # The side that runs first alternates, so neither always meets a warmer server.
            sides = [_graduate_sample, _plain_sample]
            if repeat % 2:
                sides.reverse()
            measured = {}
            for side in sides:
                step(f"{engine}: {_side_name(side)} run {repeat + 1} of {options.repeats}")
                measured[side] = side(settings, flow, nodes, engine, stack, options)
            pairs.append((measured[_graduate_sample], measured[_plain_sample]))
    shutil.rmtree(folder)  # measured: kept only when the section failed, to look into
    return {
        "graduate": [vars(g) for g, _ in pairs],
        "plain": [vars(p) for _, p in pairs],
        "throughput_ratio": vars(Spread.of([g.flows_per_second / p.flows_per_second
                                            for g, p in pairs])),
        "step_latency_ratio": vars(Spread.of([g.step_p50 / p.step_p50 for g, p in pairs
                                              if p.step_p50 > 0])),
        "wait_latency_ratio": vars(Spread.of([g.wait_p50 / p.wait_p50 for g, p in pairs
                                              if g.wait_p50 and p.wait_p50]))
        if all(g.wait_p50 and p.wait_p50 for g, p in pairs) else None,
    }


def _side_name(side: Callable[..., FlowSample]) -> str:
    return "graduate" if side is _graduate_sample else "plain SDK"


def _graduate_sample(settings: Settings, flow: Flow, nodes: Sequence[tuple[str, str]],
                     engine: str, stack: Any, options: BenchOptions) -> FlowSample:
    result = run_flow(settings, RunOptions(flow=options.flow, engine=engine,
                                           instances=options.instances,
                                           timeout=options.timeout,
                                           decisions=approve_all(flow)),
                      flow=flow, stack=stack)
    if not result.succeeded:
        raise ConfigError(f"graduate's run {result.run_id} on {engine} did not complete "
                          "every instance; the bench measures finished runs only: give a "
                          "longer --timeout or fewer --instances")
    ledger = Ledger(settings.ledger)
    started = {i.instance_id: ledger.instance(i.instance_id).started_at
               for i in result.instances}
    landed: dict[str, dict[str, float]] = {}
    for record in ledger.effects(run_id=result.run_id):
        if record.kind == "effect":
            landed.setdefault(record.instance_id, {}).setdefault(record.step,
                                                                  record.finished_at)
    return sample(nodes, started, landed)


def _plain_sample(settings: Settings, flow: Flow, nodes: Sequence[tuple[str, str]],
                  engine: str, stack: Any, options: BenchOptions) -> FlowSample:
    run_id = uuid.uuid4().hex[:6]
    run_dir = settings.state_dir / "bench" / run_id
    database = run_dir / "plain.sqlite3"
    create_database(database)
    spec = PlainSpec(nodes=tuple(nodes), services=services_for_worker(stack.services),
                     database=str(database), queue=f"graduate-plain.{flow.name}.{run_id}",
                     ready_file=str(run_dir / "ready" / "plain.ready"),
                     deadlines=plain_deadlines(flow))
    ids = [f"plain-{flow.name}-{run_id}-{n:04d}" for n in range(options.instances)]
    with open_plain(engine, spec, run_dir) as client:
        run = drive(client, nodes, ids, database, options.timeout)
    measured = sample(nodes, run.started, run.landed)
    shutil.rmtree(run_dir)  # its worker's log and table, kept only when the run failed
    return measured


# ---------------------------------------------------------------------------- matrix


def matrix_time(settings: Settings, options: BenchOptions,
                step: Callable[[str], None]) -> dict[str, Any]:
    """The demo's matrix exactly as `graduate demo` runs it, with its wall time split;
    then the faults of `options` under each profile, for the time to resume."""
    demo = _timed_matrix(settings, step, "demo", DEMO_FLOW, engines=options.matrix_engines,
                         faults=DEMO_FAULTS, profiles=("defaults",),
                         instances=DEFAULT_INSTANCES, timeout=DEMO_TIMEOUT,
                         jobs=demo_jobs(options.matrix_engines))
    sla = _timed_matrix(settings, step, "time to resume", options.flow,
                        engines=options.matrix_engines, faults=options.matrix_faults,
                        profiles=options.profiles, instances=options.matrix_instances,
                        timeout=options.timeout, jobs=1)
    return {"demo": demo, "sla": sla}


def _timed_matrix(settings: Settings, step: Callable[[str], None], what: str, flow: str, *,
                  engines: Sequence[str], faults: Sequence[str], profiles: Sequence[str],
                  instances: int, timeout: float, jobs: int) -> dict[str, Any]:
    """A crash matrix, `jobs` cells at once, with each cell's wall time split."""
    cells: list[dict[str, Any]] = []
    step(f"{what} matrix: first cell")

    def on_cell(cell: Any, number: int, total: int) -> None:
        cells.append({"engine": cell.engine, "fault": cell.label, "profile": cell.profile,
                      "run_id": cell.run_id, "status": cell.status,
                      "time_to_resume": cell.summary.median_time_to_resume
                      if cell.summary is not None else None})
        if number < total:
            step(f"{what} matrix: cell {number + 1} of {total}")

    started = time.time()  # epoch seconds, as the runs record their own times
    result = graduate.matrix(flow, engines=engines, faults=faults, profiles=profiles,
                             instances=instances, timeout=timeout, settings=settings,
                             evidence=bench_evidence(settings), on_cell=on_cell, jobs=jobs)
    wall = time.time() - started
    store = EvidenceStore(bench_evidence(settings))
    for cell in cells:
        cell.update(_split(store, cell["run_id"]))
    return {"matrix_id": result.matrix_id, "wall": wall, "cells": cells,
            "faults": list(faults), "profiles": list(profiles), "instances": instances,
            "timeout": timeout, "jobs": jobs,
            **matrix_split(cells, (started, started + wall))}


def matrix_split(cells: Sequence[Mapping[str, Any]], span: tuple[float, float],
                 ) -> dict[str, float]:
    """A matrix's time, from its cells' splits (`_split`) and its wall-clock `span`.

    Cells side by side add up to more than the wall time, so each part is a sum of
    cells' seconds and its share is of `cell_time` (the cells' walls added up): overlap
    neither inflates a part nor hides one. The harness is split further into `starting`,
    `flow` and `judging` (see `_split`); `best_share` is the recovery's share if starting
    and judging cost nothing: the flow up to each fault (in a cell without one, its whole
    run) is not recovery by definition, so the share cannot pass it. Against the wall
    time: `recovery_covered` is the share of it in which at least one cell was inside an
    engine's recovery, and `between_runs` the seconds in which no cell's run was under
    way (the matrix's own work: planning, starting each lane, stopping a cell's workers,
    saving, and a cell waiting for another's start).
    """
    wall = span[1] - span[0]
    runs = _covered([(c["began"], c["began"] + c["wall"]) for c in cells], span)
    recovering = _covered([c["recovery_span"] for c in cells if c["recovery"] > 0], span)
    parts = {key: sum(c.get(key, 0.0) for c in cells)
             for key in ("recovery", "deadline_wait", "harness", "starting", "flow", "judging")}
    floor = parts["recovery"] + parts["deadline_wait"] + parts["flow"]
    return {"cell_time": sum(c["wall"] for c in cells), **parts,
            "best_share": parts["recovery"] / floor if floor > 0 else 0.0,
            "recovery_covered": recovering / wall if wall > 0 else 0.0,
            "between_runs": max(0.0, wall - runs)}


def _covered(spans: Sequence[Sequence[float]], within: tuple[float, float]) -> float:
    """Seconds of `within` that at least one of `spans` (start, end) covers."""
    total, reached = 0.0, within[0]
    for start, end in sorted((max(a, within[0]), min(b, within[1])) for a, b in spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def _split(store: EvidenceStore, run_id: str | None) -> dict[str, Any]:
    """A cell's wall time, from its run's start to its storing: inside the engine's
    recovery (from the fault to the last effect, or to an early end), waiting for the
    run's deadline after the last effect, and the rest (the harness). The harness is
    `starting` (workers and instances, up to the instances-started event: a run that
    could not apply starts none), `flow` (from there to the fault, or to the run's end
    or last effect when no fault fired: the flow's own steps and waits) and `judging`
    (after the run ended: histories, verdicts, storing). Times are epoch seconds, as
    the run records them."""
    if run_id is None:
        return {"wall": 0.0, "began": 0.0, "recovery": 0.0, "recovery_span": (0.0, 0.0),
                "deadline_wait": 0.0, "harness": 0.0, "starting": 0.0, "flow": 0.0,
                "judging": 0.0, "ended": ""}
    record = store.load_run(run_id)
    began = record.started_at if record.started_at is not None else 0.0
    wall = max(0.0, datetime.fromisoformat(record.created_at).timestamp() - began)
    fired = [e.at for e in record.timeline if e.kind == FAULT_FIRED.kind]
    ended = next((e for e in record.timeline if e.kind == RUN_ENDED.kind), None)
    started = next((e.at for e in record.timeline if e.kind == INSTANCES_STARTED.kind), None)
    end = ended.at if ended is not None else 0.0
    last_effect = max((e.finished_at - began for e in record.ledger), default=0.0)
    by_deadline = ended is not None and ended.detail == "deadline passed"
    recovery = 0.0
    if fired:
        recovery = max(0.0, (last_effect if by_deadline else end) - fired[0])
    deadline_wait = max(0.0, end - max(last_effect, fired[0] if fired else 0.0)) \
        if by_deadline else 0.0
    since = began + (fired[0] if fired else 0.0)
    harness = max(0.0, wall - recovery - deadline_wait)
    starting = min(harness, started if started is not None else wall)
    judging = min(harness - starting, max(0.0, wall - end)) if ended is not None else 0.0
    return {"wall": wall, "began": began, "recovery": recovery,
            "recovery_span": (since, since + recovery), "deadline_wait": deadline_wait,
            "harness": harness, "starting": starting, "judging": judging,
            "flow": max(0.0, harness - starting - judging),
            "ended": ended.detail if ended is not None else ""}
