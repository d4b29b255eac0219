"""Each fault module on its own: where it applies (by the engine's declared capabilities
and by who runs the services), what it writes into the timeline, whether a resume is
expected after it, and its options."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tests.unit.conftest import SAMPLE

from graduate.adapters import describe
from graduate.adapters.registry import EngineDescription
from graduate.chaos.faults import (
    Fault,
    FaultPlan,
    deploy_change,
    double_start,
    fault_names,
    faults,
    get_fault,
    kill_pool_child,
    kill_worker,
    none,
    not_applicable,
    parse_label,
    parse_plan,
    partition,
    plan_from_record,
    restart_broker,
    restart_server,
    rollback_rehearsal,
    stop_worker,
    timeline_events,
    wait_timeout,
)
from graduate.chaos.matrix import DEFAULT_FAULTS, CellOutcome, MatrixSpec, plan_cells
from graduate.config import Settings, load_settings
from graduate.errors import ConfigError
from graduate.flow import Flow, load_flow
from graduate.runs.supervisor import Supervisor
from graduate.runs.timeline import EventKind
from graduate.services.resolver import DockerStrategy, Resolver, make_resolver

TEMPORAL, CHAIN = describe("temporal"), describe("celery-chain")
AT = "activate:before-effect"


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(str(SAMPLE))


def reason(plan: FaultPlan, engine: EngineDescription, *, local: bool = True) -> str | None:
    return not_applicable(plan, engine, local_broker=local, local_server=local)


def without(engine: EngineDescription, **capabilities: bool) -> EngineDescription:
    return replace(engine, capabilities=replace(engine.capabilities, **capabilities))


def events(module: ModuleType) -> dict[str, tuple[str, str]]:
    fault = module.FAULT
    return {e.kind: (e.title, e.category) for e in fault.events}


def external(tmp_path: Path, **values: str) -> Settings:
    return load_settings(values, project_dir=tmp_path)


def test_none_applies_everywhere_fires_nothing_and_expects_no_resume(flow: Flow) -> None:
    plan = parse_plan(none.NAME, None, flow, restart_delay=0.5)

    assert plan == FaultPlan(none.FAULT)  # the baseline keeps nothing of the options
    assert reason(plan, TEMPORAL) is None
    assert reason(plan, CHAIN, local=False) is None
    assert not none.FAULT.fires
    assert not none.FAULT.expects_resume
    assert events(none) == {}


def test_kill_worker_applies_everywhere_and_restarts_the_worker(flow: Flow) -> None:
    plan = parse_plan(kill_worker.NAME, AT, flow)

    assert reason(plan, TEMPORAL, local=False) is None
    assert reason(plan, CHAIN, local=False) is None
    assert kill_worker.FAULT.expects_resume
    assert kill_worker.FAULT.group == "worker"
    assert events(kill_worker) == {"fault-fired": ("fault fired", "fault"),
                                   "service-restarted": ("service restarted", "recovery"),
                                   "worker-started": ("worker started", "recovery")}


def test_kill_worker_with_restart_also_restarts_the_broker_or_server_graduate_started(
        flow: Flow) -> None:
    plan = parse_plan("kill-worker", AT, flow, restart=True)

    assert (plan.label, parse_label("kill-worker+restart")) == (
        "kill-worker+restart", (kill_worker.FAULT, {"restart": True}))
    assert plan.describe() == f"kill-worker at {AT} with the broker or server restarted"
    assert kill_worker.FAULT.restarted(plan, TEMPORAL) == "server"
    assert kill_worker.FAULT.restarted(plan, CHAIN) == "broker"
    assert reason(plan, TEMPORAL) is None
    assert reason(plan, CHAIN) is None
    assert reason(plan, TEMPORAL, local=False) == (
        "the Temporal server is external: graduate cannot kill and restart it")
    assert reason(plan, CHAIN, local=False) == (
        "the broker is external: graduate cannot kill and restart it")
    assert "neither a broker nor a workflow server" in str(
        reason(plan, without(CHAIN, broker=False, server=False)))


def test_kill_pool_child_needs_pool_children(flow: Flow) -> None:
    plan = parse_plan(kill_pool_child.NAME, AT, flow)

    assert reason(plan, CHAIN) is None
    assert "no pool child" in str(reason(plan, TEMPORAL))
    assert "no pool child" in str(reason(plan, without(CHAIN, pool_children=False)))
    assert events(kill_pool_child) == {"fault-fired": ("fault fired", "fault"),
                                       "fault-skipped": ("fault skipped", "stop")}


def test_stop_worker_is_warm_unless_cold(flow: Flow) -> None:
    warm = parse_plan(stop_worker.NAME, AT, flow)
    cold = parse_plan(stop_worker.NAME, AT, flow, cold=True)

    assert reason(warm, TEMPORAL) is None
    assert reason(cold, CHAIN) is None
    assert warm.describe() == f"stop-worker at {AT} (warm shutdown)"
    assert cold.describe() == f"stop-worker at {AT} (cold shutdown)"
    assert (warm.label, cold.label) == ("stop-worker", "stop-worker+cold")
    assert parse_label("stop-worker+cold") == (stop_worker.FAULT, {"cold": True})
    assert events(stop_worker) == {
        "fault-fired": ("fault fired", "fault"), "worker-exited": ("worker exited", "stop"),
        "worker-forced": ("worker killed after its grace period", "stop"),
        "worker-started": ("worker started", "recovery")}


def test_restart_broker_needs_a_broker_graduate_started(flow: Flow, tmp_path: Path) -> None:
    plan = parse_plan(restart_broker.NAME, AT, flow)

    assert reason(plan, CHAIN) is None
    assert reason(plan, TEMPORAL) == ("Temporal has no broker: workers talk to the server "
                                      "(see restart-server)")
    assert reason(plan, CHAIN, local=False) == ("the broker is external: graduate cannot "
                                                "kill and restart it")
    fault = restart_broker.FAULT
    assert make_resolver("external", external(tmp_path), tmp_path).cannot(fault) == (
        "the broker is external: graduate cannot kill and restart it")
    assert make_resolver("local", external(tmp_path), tmp_path).cannot(fault) is None
    configured = external(tmp_path, broker_url="redis://elsewhere:6379/0")
    assert make_resolver("local", configured, tmp_path).cannot(fault) is not None
    assert events(restart_broker) == {"fault-fired": ("fault fired", "fault"),
                                      "service-restarted": ("service restarted", "recovery")}


def test_restart_server_needs_a_server_graduate_started(flow: Flow, tmp_path: Path) -> None:
    plan = parse_plan(restart_server.NAME, AT, flow)

    assert reason(plan, TEMPORAL) is None
    assert reason(plan, CHAIN) == ("Celery has no workflow server: its state is in the "
                                   "broker (see restart-broker)")
    assert reason(plan, TEMPORAL, local=False) == ("the Temporal server is external: "
                                                   "graduate cannot kill and restart it")
    fault = restart_server.FAULT
    assert make_resolver("local", external(tmp_path), tmp_path).cannot(fault) is None
    configured = external(tmp_path, temporal_address="elsewhere:7233")
    assert "Temporal server is external" in str(
        make_resolver("local", configured, tmp_path).cannot(fault))
    assert restart_server.FAULT.restarts == "server"
    assert events(restart_server) == events(restart_broker)


def test_no_provider_but_the_local_one_restarts_servers() -> None:
    # No Docker engine needed to ask.
    docker = Resolver(Settings(project_dir=Path.cwd()),
                      DockerStrategy.__new__(DockerStrategy))
    assert docker.cannot(restart_broker.FAULT) is not None
    assert docker.cannot(restart_server.FAULT) is not None
    assert docker.cannot(kill_worker.FAULT) is None


def test_partition_applies_everywhere_and_routes_the_workers(flow: Flow) -> None:
    plan = parse_plan(partition.NAME, AT, flow, partition_for=2.0)

    assert reason(plan, TEMPORAL, local=False) is None
    assert reason(plan, CHAIN, local=False) is None
    assert partition.FAULT.worker_services(Settings.__new__(Settings), []) is not None
    assert kill_worker.FAULT.worker_services(Settings.__new__(Settings), []) is None
    assert partition.FAULT.group == "service"
    assert events(partition) == {"fault-fired": ("fault fired", "fault"),
                                 "network-healed": ("network healed", "recovery")}


def test_registered_workers_take_the_worker_faults_but_not_what_needs_graduates_own(
        flow: Flow) -> None:
    """On workers `graduate worker` registered, the worker faults fire through their
    agents; what needs workers graduate started says why it cannot, from its module."""
    temporal = describe("temporal")

    def on_registered(fault: str, **options: bool | str) -> str | None:
        plan = parse_plan(fault, None if fault == none.NAME else AT, flow, options=options)
        return not_applicable(plan, temporal, local_broker=False, local_server=False,
                              own_workers=False)

    for fault in (none.NAME, kill_worker.NAME, stop_worker.NAME, double_start.NAME,
                  rollback_rehearsal.NAME):
        assert on_registered(fault) is None, fault
    assert on_registered(deploy_change.NAME, versioned=True) is None
    assert "proxy graduate can cut" in (on_registered(partition.NAME) or "")
    assert "starts no workers beside registered workers" in (
        on_registered(deploy_change.NAME, pinned=True) or "")
    # Graduate's own workers take both.
    plan = parse_plan(partition.NAME, AT, flow)
    assert not_applicable(plan, temporal, local_broker=True, local_server=True) is None


def test_deploy_change_versioned_needs_a_versioning_guard(flow: Flow) -> None:
    unguarded = parse_plan(deploy_change.NAME, "approval:during-wait", flow)
    guarded = parse_plan(deploy_change.NAME, "approval:during-wait", flow, versioned=True,
                         change="add-step")

    assert reason(unguarded, CHAIN) is None
    assert reason(guarded, TEMPORAL) is None
    assert "Celery has no versioning guard" in str(reason(guarded, CHAIN))
    assert guarded.describe() == ("deploy-change at approval:during-wait "
                                  "(add-step, versioned)")
    assert guarded.label == "deploy-change+versioned"
    assert deploy_change.FAULT.requirement("") == ("a deploy of changed code "
                                                    "(deploy-change, versioned)")
    with pytest.raises(ConfigError, match="change 'rewrite' is not one of reorder"):
        parse_plan(deploy_change.NAME, "approval:during-wait", flow, change="rewrite")
    assert events(deploy_change) == {
        **events(stop_worker),
        "replay-predicted": ("replay's prediction for an instance, before the deploy", "info"),
        "instances-started": ("instances started", "info")}


def test_deploy_change_pinned_runs_temporal_workers_as_versions(flow: Flow) -> None:
    pinned = parse_plan(deploy_change.NAME, "approval:during-wait", flow, pinned=True)

    assert pinned.label == "deploy-change+pinned"
    assert pinned.describe() == ("deploy-change at approval:during-wait "
                                 "(reorder, pinned to worker versions)")
    assert reason(pinned, TEMPORAL) is None
    assert "cannot run two versions of its workers side by side" in str(reason(pinned, CHAIN))
    # The workers run as versions from the start: each instance is pinned from its first task.
    assert deploy_change.FAULT.engine_settings(pinned, TEMPORAL, {"heartbeat_timeout": 2}) == {
        "heartbeat_timeout": 2, "worker_versioning": True}
    assert deploy_change.FAULT.engine_settings(pinned, CHAIN, {}) == {}
    unpinned = parse_plan(deploy_change.NAME, "approval:during-wait", flow)
    assert deploy_change.FAULT.engine_settings(unpinned, TEMPORAL, {}) == {}
    # Either guard counts as the worker versioning story an ADR gate asks for.
    assert deploy_change.FAULT.proves({"pinned": True})
    assert deploy_change.FAULT.proves({"versioned": True})
    assert not deploy_change.FAULT.proves({"versioned": False, "pinned": False})
    with pytest.raises(ConfigError, match="choose one guard"):
        parse_plan(deploy_change.NAME, "approval:during-wait", flow, pinned=True,
                   versioned=True)


def test_wait_timeout_picks_the_wait_and_expects_no_resume(flow: Flow) -> None:
    plan = parse_plan(wait_timeout.NAME, None, flow, restart_delay=0.5)

    assert (plan.step, plan.point, plan.restart_delay) == ("approval", "during-wait", 0.5)
    assert reason(plan, TEMPORAL) is None
    assert reason(plan, CHAIN, local=False) is None
    assert not wait_timeout.FAULT.expects_resume
    assert wait_timeout.FAULT.lets_waits_expire
    assert events(wait_timeout) == {"fault-fired": ("fault fired", "fault")}


def test_double_start_applies_everywhere_at_once_or_after_a_crash(flow: Flow) -> None:
    at_once = parse_plan(double_start.NAME, AT, flow)
    crash = parse_plan(double_start.NAME, AT, flow, options={"crash": True, "all": True})

    assert reason(at_once, TEMPORAL, local=False) is None
    assert reason(crash, CHAIN, local=False) is None
    assert at_once.describe() == f"double-start at {AT} (at once)"
    assert crash.describe() == f"double-start at {AT} (after a worker crash, every instance " \
                               "in flight)"
    assert crash.label == "double-start+crash+all"
    assert parse_label("double-start+crash") == (double_start.FAULT, {"crash": True})
    assert not double_start.FAULT.expects_resume
    assert double_start.FAULT.requirement("") == "double-start"
    assert events(double_start) == {
        "fault-fired": ("fault fired", "fault"),
        "second-start-accepted": ("the same business key started again: accepted", "fault"),
        "second-start-refused": ("the same business key started again: refused by the "
                                 "engine", "recovery"),
        "worker-started": ("worker started", "recovery")}


def test_rollback_rehearsal_needs_an_engine_that_compensates(flow: Flow) -> None:
    one = parse_plan(rollback_rehearsal.NAME, "approval:during-wait", flow)
    every = parse_plan(rollback_rehearsal.NAME, "approval:during-wait", flow, options={
        "all": True})

    assert reason(one, TEMPORAL, local=False) is None
    assert reason(every, CHAIN, local=False) is None
    assert "has no compensation path" in str(reason(one, without(CHAIN, compensation=False)))
    assert one.describe() == "rollback-rehearsal at approval:during-wait"
    assert every.describe() == ("rollback-rehearsal at approval:during-wait (every instance "
                                "in flight)")
    assert every.label == "rollback-rehearsal+all"
    assert not rollback_rehearsal.FAULT.expects_resume
    with pytest.raises(ConfigError, match="option crash does not apply to rollback"):
        parse_plan(rollback_rehearsal.NAME, AT, flow, options={"crash": True})
    assert events(rollback_rehearsal) == {
        "fault-fired": ("fault fired", "fault"),
        "rollback-cancel": ("operator cancelled the instance (rollback)", "fault"),
        "rollback-cancel-refused": ("the engine refused the cancellation", "stop")}


def test_the_default_matrix_starts_twice_and_rehearses_a_rollback_at_the_wait(
        flow: Flow, tmp_path: Path) -> None:
    cells = plan_cells(flow, MatrixSpec(flow=str(SAMPLE), engines=("temporal",)), tmp_path)
    at = {c.fault: c.at for c in cells}

    assert {double_start.NAME, rollback_rehearsal.NAME} <= set(DEFAULT_FAULTS)
    assert at[double_start.NAME] == AT
    assert at[rollback_rehearsal.NAME] == "approval:during-wait"
    assert double_start.FAULT.group == rollback_rehearsal.FAULT.group == "operator"


def test_every_fault_is_registered_once_and_its_events_are_known() -> None:
    assert fault_names() == ("none", "kill-worker", "kill-pool-child", "stop-worker",
                             "restart-broker", "restart-server", "partition",
                             "deploy-change", "wait-timeout", "double-start",
                             "rollback-rehearsal")
    known = timeline_events()
    for name in fault_names():
        assert all(known[e.kind] == e for e in get_fault(name).events)
    assert known["signal-sent"].category == "signal"


def test_an_option_of_another_fault_is_refused_unless_left_at_its_default(
        flow: Flow) -> None:
    parse_plan(kill_worker.NAME, AT, flow, versioned=False, cold=False, change="reorder")
    with pytest.raises(ConfigError, match="option cold does not apply to kill-worker"):
        parse_plan(kill_worker.NAME, AT, flow, cold=True)
    with pytest.raises(ConfigError, match="fault 'kill-worker' has no option 'cold'"):
        parse_label("kill-worker+cold")


def test_a_stored_plan_reads_back_the_same(flow: Flow) -> None:
    plan = parse_plan(deploy_change.NAME, "approval:during-wait", flow, versioned=True)
    stored = plan.to_dict()

    assert stored["versioned"] is True
    assert stored["cold"] is False
    assert plan_from_record(stored) == plan
    assert plan_from_record({}).fault is none.FAULT


def test_a_matrix_cell_written_before_faults_had_options_still_loads() -> None:
    legacy = {"key": "temporal|deploy-change+versioned@approval:during-wait|defaults",
              "engine": "temporal", "fault": "deploy-change", "at": "approval:during-wait",
              "profile": "defaults", "versioned": True, "cold": False, "status": "done",
              "run_id": "abc123", "summary": {
                  "completed": 1, "compensated": 0, "failed": 0, "lost": 0, "stuck": 0,
                  "instances": 1, "applicable": True, "fired": True, "reason": "",
                  "unabsorbed_duplicates": 0, "absorbed_duplicates": 0, "hit_by_fault": 1,
                  "resumed_exactly": 1, "median_time_to_resume": 1.5, "passed": True,
                  "failures": []}}

    cell = CellOutcome.from_dict(legacy)

    assert cell.options == {"versioned": True}
    assert cell.label == "deploy-change+versioned"
    assert cell.key == legacy["key"]
    assert CellOutcome.from_dict(asdict(cell)) == cell


def test_a_fault_that_lets_waits_expire_does_not_apply_to_a_teams_app(flow: Flow) -> None:
    plan = parse_plan(wait_timeout.NAME, None, flow, restart_delay=0.5)

    assert reason(plan, TEMPORAL) is None
    for app_engine in (describe("temporal-app"), describe("celery-app")):
        assert reason(plan, app_engine) == (
            f"{app_engine.title} sets its waits' deadlines in its own code; graduate can "
            "shorten only a model's")
    assert reason(parse_plan(kill_worker.NAME, AT, flow), describe("celery-app")) is None


def test_graduate_deploys_no_change_of_a_teams_own_code(flow: Flow) -> None:
    plan = parse_plan(deploy_change.NAME, "approval:during-wait", flow)

    assert reason(plan, CHAIN) is None
    assert reason(plan, describe("celery-app")) == (
        "graduate cannot write a new version of the team's Celery app's code; deploy your "
        "change yourself and run again")


def test_a_rollback_is_rehearsed_only_where_an_instance_can_be_cancelled(flow: Flow) -> None:
    plan = parse_plan(rollback_rehearsal.NAME, "approval:during-wait", flow)

    assert reason(plan, describe("temporal-app")) is None
    assert reason(plan, describe("celery-app")) == (
        "the team's Celery app offers no way to cancel an instance: there is nothing to ask "
        "for a rollback")


def _written(code: Callable[..., Any] | ModuleType, namespace: Mapping[str, Any],
             seen: set[object]) -> set[EventKind]:
    """The kinds of timeline event `code` writes: its own `timeline.add(KIND, ...)`
    calls, and those of the fault helpers and supervisor acts it calls."""
    if code in seen:
        return set()
    seen.add(code)
    found: set[EventKind] = set()
    for call in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(code)))):
        if not isinstance(call, ast.Call):
            continue
        target = call.func
        if (isinstance(target, ast.Attribute) and target.attr == "add" and call.args
                and isinstance(target.value, ast.Attribute) and target.value.attr == "timeline"
                and isinstance(call.args[0], ast.Name)):
            found.add(namespace[call.args[0].id])
        elif (isinstance(target, ast.Attribute) and ast.unparse(target.value).endswith(
                "supervisor") and callable(act := getattr(Supervisor, target.attr, None))):
            found |= _written(act, vars(inspect.getmodule(Supervisor)), seen)
        elif isinstance(target, ast.Name) and inspect.isfunction(helper := namespace.get(
                target.id)) and helper.__module__.startswith("graduate.chaos.faults."):
            found |= _written(helper, vars(inspect.getmodule(helper)), seen)
    return found


@pytest.mark.parametrize("fault", faults(), ids=fault_names())
def test_a_fault_declares_every_timeline_event_it_writes(fault: Fault) -> None:
    """A report titles and files each event by the fault's own list: an event the fault
    writes but does not declare would be described elsewhere, or nowhere."""
    module = inspect.getmodule(fault)
    assert module is not None

    assert _written(module, vars(module), set()) <= set(fault.events)
