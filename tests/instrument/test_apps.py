"""A team's app declared in [tool.graduate.apps.NAME]: good declarations load and check;
bad ones are refused before anything runs, with what to fix."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from graduate.adapters.celery.app_worker import configure
from graduate.adapters.celery.application import app_settings
from graduate.apps import app_of_run, check_app, effect_calls, find_app, load_apps
from graduate.config import load_settings
from graduate.errors import ConfigError
from tests.instrument.conftest import ORDERS, ROOT

APPS = "tests.instrument.apps"


def project(folder: Path, declaration: str, **modules: str) -> Path:
    """A project folder with `declaration` under [tool.graduate.apps.orders] and a
    package of the team's `modules` (returned package name replaces PKG)."""
    package = f"team_{uuid.uuid4().hex[:8]}"
    (folder / package).mkdir()
    (folder / package / "__init__.py").write_text("")
    for name, text in modules.items():
        (folder / package / f"{name}.py").write_text(textwrap.dedent(text))
    (folder / "pyproject.toml").write_text(
        "[tool.graduate]\n" + textwrap.dedent(declaration).replace("PKG", package)
        .replace("ORDERS", str(ORDERS)))
    return folder


GOOD = f"""
    [tool.graduate.apps.orders]
    flow = "ORDERS"

    [tool.graduate.apps.orders.temporal]
    worker = "{APPS}.temporal_worker:create_worker"
    start = "{APPS}.temporal_worker:start"

    [tool.graduate.apps.orders.celery]
    app = "{APPS}.celery_app:app"
    queues = ["orders"]
    beat = false
    start = "{APPS}.celery_app:start"
"""


def test_a_declared_app_loads_and_passes_its_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ORDERS_QUEUE", "orders")
    folder = project(tmp_path, GOOD)

    app = find_app(folder, "orders")
    check_app(app)

    assert app.flow.name == "orders"
    assert app.engines["celery"] == {"app": f"{APPS}.celery_app:app", "queues": ["orders"],
                                     "beat": False, "start": f"{APPS}.celery_app:start"}
    assert load_settings(project_dir=folder).project_dir == folder  # [apps] is known


@pytest.mark.parametrize(("declaration", "message"), [
    ("[tool.graduate.apps.orders]\n[tool.graduate.apps.orders.celery]\n",
     r"flow is missing"),
    ('[tool.graduate.apps.orders]\nflow = "ORDERS"\n', r"declares no engine"),
    ('[tool.graduate.apps.orders]\nflow = "ORDERS"\nrabbit = {}\n',
     r"unknown key\(s\) \['rabbit'\]"),
    ('[tool.graduate.apps.orders]\nflow = "ORDERS"\n[tool.graduate.apps.orders.temporal]\n'
     'worker = "no_colon"\nstart = "m:f"\n', r"worker = 'no_colon' must be \"module:attr"),
    ('[tool.graduate.apps.orders]\nflow = "ORDERS"\n[tool.graduate.apps.orders.celery]\n'
     'app = "m:app"\nqueues = "orders"\nstart = "m:f"\n', r"queues = 'orders' must list"),
    ('[tool.graduate.apps.orders]\nflow = "ORDERS"\naudit = "records"\n'
     '[tool.graduate.apps.orders.temporal]\nworker = "m:w"\nstart = "m:f"\n',
     r"audit = 'records' must be \"module:attribute\", def records\(tenant_id, entity_id\)"),
    ('[tool.graduate.apps.orders]\nflow = "missing.toml"\n[tool.graduate.apps.orders.celery]'
     '\napp = "m:app"\nqueues = ["q"]\nstart = "m:f"\n', r"missing\.toml does not exist"),
])
def test_a_bad_declaration_is_refused_as_data(tmp_path: Path, declaration: str,
                                              message: str) -> None:
    folder = project(tmp_path, declaration)
    with pytest.raises(ConfigError, match=message):
        load_apps(folder)


def test_an_undeclared_app_is_named_with_the_declared_ones(tmp_path: Path) -> None:
    folder = project(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"no application 'billing'.*declared: orders"):
        find_app(folder, "billing")


WORKFLOW = """
    from temporalio import activity, workflow
    from graduate.apps import TemporalWorker

    @workflow.defn
    class Flow:
        @workflow.run
        async def run(self) -> None: ...

    @activity.defn
    def charge() -> None: ...

    def not_a_workflow() -> None: ...

    def create_worker():
        return TemporalWorker("q", [Flow], [charge])

    def create_wrong():
        return {"task_queue": "q"}

    def create_undecorated():
        return TemporalWorker("q", [Flow], [not_a_workflow])

    def create_with_a_stranger():
        return TemporalWorker("q", [Flow], [charge], interceptors=[object()])

    async def start(client, request) -> None: ...

    def start_sync(client, request) -> None: ...
"""


@pytest.mark.parametrize(("worker", "start", "message"), [
    ("missing_module:create", "PKG.team:start", r"cannot import 'missing_module'"),
    ("PKG.team:create_nothing", "PKG.team:start", r"has no 'create_nothing'"),
    ("PKG.team:create_wrong", "PKG.team:start", r"returned a dict; it must be"),
    ("PKG.team:create_undecorated", "PKG.team:start", r"not a function decorated with "
                                                      r"@activity\.defn"),
    ("PKG.team:create_with_a_stranger", "PKG.team:start", r"among its interceptors, but it is "
                                                         r"neither a temporalio\.client\."),
    ("PKG.team:create_worker", "PKG.team:start_sync", r"must be an async function"),
    ("PKG.team:create_worker", "PKG.team:create_worker", r"must be an async function"),
])
def test_a_temporal_app_of_the_wrong_shape_is_refused(
        tmp_path: Path, worker: str, start: str, message: str) -> None:
    folder = project(tmp_path, f"""
        [tool.graduate.apps.orders]
        flow = "ORDERS"
        [tool.graduate.apps.orders.temporal]
        worker = "{worker}"
        start = "{start}"
        """, team=WORKFLOW)
    with pytest.raises(ConfigError, match=message):
        check_app(find_app(folder, "orders"))


@pytest.mark.parametrize(("code", "message"), [
    ('graduate.effect("crm.update", key="k")',
     r"team\.py:\d+: graduate\.effect\('crm\.update'\) names an effect that no step"),
    ('graduate.effect("crm.update", key="k", step="ship")',
     r"step='ship'\) names a step that flow 'orders'"),
])
def test_an_effect_name_the_flow_does_not_have_is_refused(
        tmp_path: Path, code: str, message: str) -> None:
    folder = project(tmp_path, """
        [tool.graduate.apps.orders]
        flow = "ORDERS"
        [tool.graduate.apps.orders.celery]
        app = "PKG.team:app"
        queues = ["orders"]
        start = "PKG.team:start"
        """, team=f"""
        import graduate.instrument as graduate
        from celery import Celery

        app = Celery("team", set_as_current=False)

        def start(request) -> None:
            with graduate.effect("payments.charge", key="fine"):
                pass

        def update(order) -> None:
            with {code}:
                pass
        """)
    with pytest.raises(ConfigError, match=message):
        check_app(find_app(folder, "orders"))


def test_an_audit_reader_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    folder = project(tmp_path, """
        [tool.graduate.apps.orders]
        flow = "ORDERS"
        audit = "PKG.audit:records"
        [tool.graduate.apps.orders.temporal]
        worker = "PKG.team:create_worker"
        start = "PKG.team:start"
        """, team=WORKFLOW, audit="def records(entity_id): ...\n")
    with pytest.raises(ConfigError, match=r"audit:records' cannot be called with 2 argument"
                                          r"\(s\).*def records\(tenant_id, entity_id\)"):
        check_app(find_app(folder, "orders"))


def test_a_celery_app_that_is_not_a_celery_instance_is_refused(tmp_path: Path) -> None:
    folder = project(tmp_path, """
        [tool.graduate.apps.orders]
        flow = "ORDERS"
        [tool.graduate.apps.orders.celery]
        app = "PKG.team:app"
        queues = ["orders"]
        start = "PKG.team:start"
        """, team="app = object()\n\ndef start(request) -> None: ...\n")
    with pytest.raises(ConfigError, match=r"is not a Celery app \(found object\)"):
        check_app(find_app(folder, "orders"))


def test_a_celery_app_whose_flow_waits_must_declare_how_to_signal_it(
        tmp_path: Path) -> None:
    folder = project(tmp_path, f"""
        [tool.graduate.apps.orders]
        flow = "{ROOT / 'spikes' / 'partner_approval.toml'}"
        [tool.graduate.apps.orders.celery]
        app = "PKG.team:app"
        queues = ["orders"]
        start = "PKG.team:start"
        """, team="""
        from celery import Celery

        app = Celery("team", set_as_current=False)

        def start(request) -> None: ...
        """)
    with pytest.raises(ConfigError, match=r"waits for approval, but the app declares no "
                                          r"signal; add signal = "):
        check_app(find_app(folder, "orders"))


def test_a_celery_app_whose_flow_sends_notices_must_declare_how_an_instance_ended(
        tmp_path: Path) -> None:
    folder = project(tmp_path, f"""
        [tool.graduate.apps.orders]
        flow = "{ROOT / 'spikes' / 'partner_approval.toml'}"
        [tool.graduate.apps.orders.celery]
        app = "PKG.team:app"
        queues = ["orders"]
        start = "PKG.team:start"
        signal = "PKG.team:signal"
        """, team="""
        from celery import Celery

        app = Celery("team", set_as_current=False)

        def start(request) -> None: ...

        def signal(instance_id, name, payload) -> None: ...
        """)
    with pytest.raises(ConfigError, match=r"sends a notice when a wait is rejected or "
                                          r"expires, but the app declares no outcome"):
        check_app(find_app(folder, "orders"))


def fresh_app(module: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The team's Celery app as a worker imports it (settings read at import)."""
    monkeypatch.setenv("ORDERS_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("ORDERS_QUEUE", "orders")
    monkeypatch.setenv("PARTNER_APPROVAL_BROKER_URL", "redis://127.0.0.1:1/0")
    sys.modules.pop(module, None)
    return importlib.import_module(module).app


def test_a_celery_apps_own_settings_are_what_evidence_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plain = app_settings(fresh_app(f"{APPS}.celery_app", monkeypatch))
    careful = app_settings(fresh_app("examples.partner_approval_app.celery_app", monkeypatch))

    assert (plain["task_acks_late"], plain["worker_prefetch_multiplier"]) == (False, 4)
    assert (careful["task_acks_late"], careful["task_reject_on_worker_lost"],
            careful["worker_prefetch_multiplier"]) == (True, True, 1)
    assert careful["visibility_timeout"] == 3600  # the Redis transport's own default


def test_a_profile_overrides_the_apps_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    app = fresh_app(f"{APPS}.celery_app", monkeypatch)
    configure(app, {"task_acks_late": True, "visibility_timeout": 10})

    settings = app_settings(app)
    assert (settings["task_acks_late"], settings["visibility_timeout"]) == (True, 10)
    with pytest.raises(ConfigError, match="'task_ack_late' is not a Celery setting"):
        configure(app, {"task_ack_late": True})


@pytest.mark.parametrize(("command", "message"), [
    (["chaos", "orders", "--engine", "temporal", "--fault", "kill-worker", "--at",
      "charge:after-effect"], r"returned a dict; it must be"),
    (["run", "orders", "--engine", "temporal"], r"returned a dict; it must be"),
    (["run", "orders", "--engine", "celery"], r"app 'orders' declares no 'celery' engine"),
])
def test_the_cli_refuses_a_bad_declaration_with_exit_2_before_anything_runs(
        tmp_path: Path, command: list[str], message: str) -> None:
    folder = project(tmp_path, """
        [tool.graduate.apps.orders]
        flow = "ORDERS"
        [tool.graduate.apps.orders.temporal]
        worker = "PKG.team:create_wrong"
        start = "PKG.team:start"
        """, team=WORKFLOW)
    done = subprocess.run([str(Path(sys.executable).parent / "graduate"), *command], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(message, " ".join((done.stdout + done.stderr).split()))
    assert not (folder / ".graduate" / "runs").exists()  # no service, no worker started


def test_a_later_command_finds_the_app_a_run_ran_from_its_engine_and_flow(
        tmp_path: Path) -> None:
    folder = project(tmp_path, GOOD)
    flow_source = find_app(folder, "orders").flow.source

    assert app_of_run(folder, "temporal-app", flow_source) == find_app(folder, "orders")
    assert app_of_run(folder, "temporal", flow_source) is None  # a model's run
    with pytest.raises(ConfigError, match=r"that match: none"):
        app_of_run(folder, "celery-app", "elsewhere.toml")


def test_a_module_nested_too_deeply_to_parse_has_no_effect_calls_and_no_crash(
        tmp_path: Path) -> None:
    """Generated code thousands of levels deep: CPython's parser refuses it (the import
    would say so); looking for effect names skips it and reads the other files."""
    deep = tmp_path / "generated.py"
    deep.write_text("x = " + "-" * 40_000 + "1\n")
    calls = tmp_path / "steps.py"
    calls.write_text('effect("crm.create_record", step="create_record")\n')

    assert list(effect_calls([deep, calls])) == [(calls, 1, "crm.create_record",
                                                   "create_record")]
