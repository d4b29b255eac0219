"""Engines are described once: a test-only engine registered from outside `adapters/`
is listed, checked, planned by the matrix and judged by the faults like any other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.conftest import SAMPLE
from tests.unit.toy_engine import TOY, TOY_APP, TOY_BASELINE

import graduate
from graduate.adapters import (
    check_engine,
    check_settings,
    describe,
    engine_names,
    needs,
    register,
)
from graduate.adapters.registry import unregister
from graduate.apps import load_apps, resolve_target
from graduate.bench.suite import BenchOptions
from graduate.chaos.faults import faults, not_applicable, parse_plan
from graduate.chaos.matrix import MatrixSpec, plan_cells
from graduate.chaos.profiles import profile_settings
from graduate.config import load_settings
from graduate.errors import ConfigError
from graduate.flow import load_flow


@pytest.fixture
def toy() -> Iterator[str]:
    register(TOY)
    yield TOY.name
    unregister(TOY.name)


def test_the_built_in_engines_are_described() -> None:
    assert engine_names() == ("temporal", "celery-chain", "celery-state-machine")
    assert describe("temporal").capabilities.server
    assert describe("celery-chain").capabilities.broker
    assert describe("celery-state-machine").capabilities.pool_children
    assert needs(["temporal"]).temporal
    assert not needs(["temporal"]).broker
    assert needs(["temporal", "celery-chain"]).broker


def test_an_unknown_engine_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown engine 'toy'; choose one of: temporal"):
        check_engine("toy")


def test_a_registered_engine_is_listed_checked_and_given_its_profile(toy: str,
                                                                     tmp_path: Path) -> None:
    assert toy in engine_names()
    assert check_engine(toy) == toy
    check_settings(toy, {"speed": 3})
    with pytest.raises(ConfigError, match="not settings of the toy engine"):
        check_settings(toy, {"task_acks_late": True})
    assert profile_settings("tuned", toy, tmp_path) == {"speed": 2}
    assert not needs([toy]).temporal
    assert not needs([toy]).broker


def test_the_matrix_plans_a_registered_engine(toy: str, tmp_path: Path) -> None:
    flow = load_flow(str(SAMPLE))

    cells = plan_cells(flow, MatrixSpec(flow=str(SAMPLE), engines=(toy,),
                                        faults=("kill-worker", "deploy-change+versioned")),
                       tmp_path)

    assert [(c.engine, c.label) for c in cells] == [(toy, "kill-worker"),
                                                    (toy, "deploy-change+versioned")]
    assert MatrixSpec(flow="f").engines[-1] == toy


def test_the_faults_judge_a_registered_engine_by_its_capabilities(toy: str) -> None:
    flow = load_flow(str(SAMPLE))
    reasons = {}
    for fault in faults():
        at = "activate:before-effect" if fault.needs_point else None
        plan = parse_plan(fault, at, flow, options={"versioned": True}
                          if any(o.name == "versioned" for o in fault.options) else None)
        reasons[fault.name] = not_applicable(plan, describe(toy), local_broker=True,
                                             local_server=True)

    assert reasons == {
        "none": None, "kill-worker": None, "stop-worker": None, "partition": None,
        "wait-timeout": None,
        "kill-pool-child": "the Toy worker runs steps in threads of its own process: there "
                           "is no pool child to kill (see kill-worker)",
        "restart-broker": "Toy has no broker",
        "restart-server": "Toy has no workflow server",
        "deploy-change": "Toy has no versioning guard: a team would have to build one (see "
                         "the unversioned deploy-change for what happens without)",
        "double-start": None,
        "rollback-rehearsal": "Toy has no compensation path: there is nothing to rehearse a "
                              "rollback with",
    }


def test_the_library_runs_a_registered_engine_through_its_own_description(
        toy: str, tmp_path: Path) -> None:
    """`graduate.run` resolves the services the toy declares (none), then opens the
    engine by the toy's own opener: nothing between the API and the adapter names it."""
    with pytest.raises(ConfigError, match="the toy engine only exists to be described"):
        graduate.run(str(SAMPLE), engine=toy, decisions={"approval": "approve"},
                     settings=load_settings(project_dir=tmp_path), timeout=10)


def test_a_registered_engine_brings_its_bench_baseline_and_its_teams_apps(
        tmp_path: Path) -> None:
    """What else an engine package may offer is in its description too: `graduate bench`
    compares it with its plain-SDK baseline, and a project declares its own app on it."""
    (tmp_path / "flow.toml").write_text(SAMPLE.read_text(encoding="utf-8"))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.graduate.apps.shop]\nflow = "flow.toml"\n\n'
        '[tool.graduate.apps.shop.toy]\nqueue = "orders"\n')
    with pytest.raises(ConfigError, match="no plain baseline"):
        BenchOptions(engines=(TOY_BASELINE.name,))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['toy'\]"):
        load_apps(tmp_path)
    register(TOY_BASELINE)
    register(TOY_APP)
    try:
        assert BenchOptions(engines=(TOY_BASELINE.name,)).engines == (TOY_BASELINE.name,)
        app = load_apps(tmp_path)["shop"]
        assert app.engines == {"toy": {"queue": "orders"}}
        assert resolve_target(tmp_path, tmp_path, "shop", "toy").engine == TOY_APP.name
    finally:
        unregister(TOY_APP.name)
        unregister(TOY_BASELINE.name)
