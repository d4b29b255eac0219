"""How tasks, configuration and canvas are read, whatever way a codebase writes them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from graduate.errors import ConfigError
from graduate.migrate.inventory import FindingKind, Inventory, inventory, source
from graduate.migrate.inventory.jsonform import to_json
from graduate.migrate.inventory.link import link
from graduate.migrate.inventory.positions import layout, walk
from graduate.migrate.inventory.project import Project
from graduate.migrate.inventory.reader import ModuleFacts
from tests.migrate.conftest import ACME, Codebase


def found(inv: Inventory, kind: FindingKind) -> dict[str, str]:
    return {f"{f.name}@{f.location}": f.detail for f in inv.of_kind(kind)}


def test_every_way_of_declaring_a_task(codebase: Codebase) -> None:
    root = codebase({
        "proj/__init__.py": "",
        "proj/worker.py": """
            import celery
            from celery import Celery, Task

            celery_app = Celery("proj", broker="redis://")
            app = celery_app

            @celery_app.task(name="proj.ping", queue="fast", rate_limit="5/s")
            def ping():
                return "pong"

            @celery.shared_task(soft_time_limit=10, time_limit=20)
            def pong():
                return "ping"

            class Audited(celery_app.Task):
                acks_late = True

            class Export(Audited):
                name = "proj.export"
                max_retries = 7

                def run(self, report_id):
                    return report_id

            celery_app.register_task(Export())
            """,
        "proj/deco.py": """
            from celery import shared_task

            def base_task(**options):
                return shared_task(bind=True, **options)

            def audited_task(**options):
                return base_task(acks_late=True, **options)
            """,
        "proj/jobs.py": """
            from proj.deco import audited_task

            @audited_task(queue="audit")
            def audit(self, event_id):
                return event_id
            """,
    })
    tasks = found(inventory(root), FindingKind.TASK)
    assert tasks == {
        "ping@proj/worker.py:8": "proj.ping; @celery_app.task; name='proj.ping', queue='fast', "
                                 "rate_limit='5/s'",
        "pong@proj/worker.py:12": "proj.worker.pong; @celery.shared_task; soft_time_limit=10, "
                                  "time_limit=20",
        "Export@proj/worker.py:18": "proj.export; class Export(Audited); acks_late=True, "
                                    "name='proj.export', max_retries=7",
        "audit@proj/jobs.py:4": "proj.jobs.audit; @audited_task; bind=True, acks_late=True, "
                                "queue='audit'",
    }


def test_tasks_made_inside_functions(codebase: Codebase) -> None:
    """A factory (`def register(app): @app.task ...`), a setup function, an
    `on_after_configure` handler's `@sender.task`, and `app.task(fn)` inside a function
    make tasks, whose own calls are theirs; a decorator of the project's own that returns
    `shared_task(...)(wrapper)` makes none until it is used."""
    root = codebase({"proj/__init__.py": "", "proj/worker.py": """
        import requests
        from functools import partial, wraps
        from celery import Celery, shared_task
        from django.db import transaction
        from django_scopes import scopes_disabled

        app = Celery("proj", broker="redis://")

        def register(app):
            @app.task(bind=True, acks_late=True)
            def sync_invoice(self, invoice_id):
                requests.post("https://erp.example/invoices", json={"id": invoice_id})
                notify.delay(invoice_id)

            @app.task
            def notify(invoice_id):
                pass

        @app.on_after_configure.connect
        def setup_periodic(sender, **kwargs):
            @sender.task
            def sweep():
                pass
            sender.add_periodic_task(60.0, sweep.s())

        def setup_tasks():
            def archive(doc_id):
                return doc_id
            app.task(archive, name="proj.archive")

        def tenant_task(**options):
            def decorate(fn):
                @wraps(fn)
                def wrapper(*args, **kwargs):
                    return fn(*args, **kwargs)
                return shared_task(**options)(wrapper)
            return decorate

        def plain(x):
            def helper():
                requests.get("https://example.com")
            return helper()

        with scopes_disabled():  # pretix: classes defined under a module-level `with`
            class Filter:
                def active(self):
                    pass

        def make_async(cls):  # pretix's AsyncAction.__init_subclass__
            def run(self):
                pass
            run = transaction.atomic(run)
            cls.run_task = app.task(bind=True, name=cls.__name__ + ".run")(run)
            transaction.on_commit(partial(notify, 1))  # Weblate: run after the commit

        def thumbnails():  # superset's CLI hands tasks to a helper of its own
            def compute(task, ids):
                for i in ids:
                    task.delay(i)
            compute(notify, [1, 2])
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.TASK) == {
        "sync_invoice@proj/worker.py:11": "proj.worker.sync_invoice; @app.task inside "
                                         "register(); bind=True, acks_late=True",
        "notify@proj/worker.py:16": "proj.worker.notify; @app.task inside register()",
        "sweep@proj/worker.py:22": "proj.worker.sweep; @sender.task inside setup_periodic()",
        "archive@proj/worker.py:27": "proj.archive; app.task(archive) at proj/worker.py:29 "
                                     "inside setup_tasks(); name='proj.archive'",
        "run@proj/worker.py:50": "proj.worker.run; app.task(...)(run) at proj/worker.py:53 "
                                 'inside make_async(); bind=True, name=cls.__name__ + ".run"',
    }
    assert inv.skipped == ()
    # Wrapping a task in a library's decorator (`transaction.atomic(run)`) starts nothing.
    assert {(f.name, f.detail) for f in inv.of_kind(FindingKind.CALL)} == {
        ("notify", ".delay from task sync_invoice"),
        ("notify", "through partial(...) from make_async()"),
        ("notify", "through compute(...) from thumbnails()")}
    assert found(inv, FindingKind.BEAT) == {
        "sweep.s()@proj/worker.py:24": "task sweep; schedule every 60 s"}
    [flow] = [f for f in inv.flows if f.entry == "sync_invoice"]
    assert [s.task for s in flow.steps] == ["sync_invoice", "notify"]
    assert flow.systems == ("requests",)


def test_configuration_from_a_module_a_class_and_conf_updates(codebase: Codebase) -> None:
    root = codebase({
        "celeryconfig.py": """
            broker_url = "amqp://rabbit//"
            task_acks_late = True
            _private = 1
            """,
        "app.py": """
            from celery import Celery

            app = Celery("shop")
            app.config_from_object("celeryconfig")

            class Config:
                task_time_limit = 600
                worker_prefetch_multiplier = 1

            app.config_from_object(Config)
            app.conf.update({"result_expires": 60}, beat_schedule={
                "tick": {"task": "shop.tick", "schedule": 30.0},
            })
            app.conf.task_reject_on_worker_lost = True
            """,
    })
    inv = inventory(root)
    settings = {(f.name, str(f.location)) for f in inv.of_kind(FindingKind.SETTING)}
    assert settings == {
        ("broker_url", "celeryconfig.py:1"), ("task_acks_late", "celeryconfig.py:2"),
        ("task_time_limit", "app.py:6"), ("worker_prefetch_multiplier", "app.py:6"),
        ("result_expires", "app.py:11"), ("beat_schedule", "app.py:11"),
        ("task_reject_on_worker_lost", "app.py:14"),
    }
    assert found(inv, FindingKind.BEAT) == {
        "tick@app.py:12": "task shop.tick (not found in this code); schedule every 30 s"}
    assert ("broker", "rabbitmq") in inv.settings


SETTINGS_APP = """
import os
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "{module}")
app = Celery("site")
app.config_from_object("django.conf:settings", namespace="CELERY")

@app.task
def sync(repo_id):
    pass
"""


def test_one_of_several_django_settings_modules_is_read(codebase: Codebase) -> None:
    """Weblate keeps settings_example.py, settings_docker.py and settings_test.py side by
    side; its app reads `weblate.settings`, made at install from the example. The others
    are alternatives, named, not merged: the docker file's late ack is not the app's."""
    root = codebase({
        "site/__init__.py": "", "site/celery.py": SETTINGS_APP.replace("{module}", "site.settings"),
        "site/settings_example.py": 'CELERY_BROKER_URL = "redis://localhost:6379"\n',
        "site/settings_docker.py": 'CELERY_BROKER_URL = "amqp://rabbit//"\n'
                                   "CELERY_TASK_ACKS_LATE = True\n",
        "site/settings_test.py": "CELERY_TASK_ALWAYS_EAGER = True\n",
    })
    inv = inventory(root)
    settings = dict(inv.settings)
    assert settings["broker"] == "redis"
    assert settings["settings read"] == (
        "DJANGO_SETTINGS_MODULE defaults to site.settings at site/celery.py:4, which is not "
        "in the code: read from its template site/settings_example.py")
    # settings_test.py is the codebase's tests' (`*_test.py`), not read at all
    assert settings["alternative settings, not merged"] == "site/settings_docker.py"
    assert {f.name for f in inv.of_kind(FindingKind.SETTING)} == {"broker_url"}
    assert inv.hazards == ()


def test_layered_django_settings_are_read_together(codebase: Codebase) -> None:
    """The module DJANGO_SETTINGS_MODULE names and what it star-imports are one
    configuration; a sibling (dev.py) is an alternative. The app's own module
    (saleor's celeryconf.py, with its CELERY_LOGGER_NAME) is none."""
    layered = codebase({
        "proj/__init__.py": "",
        "proj/celeryconf.py": SETTINGS_APP.replace("{module}", "proj.settings.prod")
                              + 'CELERY_LOGGER_NAME = "celery"\n',
        "proj/settings/__init__.py": "",
        "proj/settings/base.py": 'CELERY_BROKER_URL = "amqp://rabbit//"\n',
        "proj/settings/prod.py": "from .base import *\nCELERY_TASK_ACKS_LATE = True\n",
        "proj/settings/dev.py": "from .base import *\nCELERY_TASK_ACKS_LATE = False\n"
                                "CELERY_BROKER_URL = 'redis://localhost'\n",
    })
    inv = inventory(layered)
    settings = dict(inv.settings)
    assert settings["broker"] == "rabbitmq"
    assert settings["settings read"] == (
        "proj/settings/prod.py (DJANGO_SETTINGS_MODULE defaults to proj.settings.prod at "
        "proj/celeryconf.py:4)")
    assert settings["alternative settings, not merged"] == "proj/settings/dev.py"
    assert settings["task_acks_late"] == "True (proj/settings/prod.py:2)"


def test_canvas_in_every_spelling(codebase: Codebase) -> None:
    root = codebase({"tasks.py": """
        from celery import Celery, chain, group, signature

        app = Celery("shop", broker="redis://")

        @app.task
        def reserve(order_id): ...

        @app.task
        def charge(order_id): ...

        @app.task
        def ship(order_id): ...

        @app.task
        def release(order_id): ...

        @app.task
        def notify(order_id): ...

        def checkout(order_id, step_name):
            (reserve.s(order_id) | charge.si(order_id) | ship.si(order_id)).apply_async(
                link_error=release.si(order_id), countdown=5)
            sig = reserve.s(order_id)
            sig.link(notify.si(order_id))
            charge.apply_async((order_id,), link=ship.si(order_id),
                               link_error=[release.si(order_id)])
            group(notify.s(i) for i in range(3)).delay()
            chain(signature("tasks.ship", args=(order_id,)), signature(step_name)).delay()
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.CANVAS) == {
        "chain@tasks.py:21": "chain(reserve -> charge -> ship); link_error -> release; "
                             "starts after 5 s",
        "chain@tasks.py:24": "chain(reserve -> notify)",
        "chain@tasks.py:25": "chain(charge -> ship); link_error -> release",
        "group@tasks.py:27": "group(notify)",
        "chain@tasks.py:28": "chain(ship -> step_name)",
    }
    assert [(str(s.location), s.reason) for s in inv.skipped] == [
        ("tasks.py:28", "dynamic task name in signature(step_name): not linked to a task")]
    (flow,) = inv.flows
    assert [s.task for s in flow.steps] == ["reserve", "charge", "ship", "notify"]
    assert flow.handlers == ("release",)
    assert [s.compensation for s in flow.steps] == [
        "tasks.release", "tasks.release", "tasks.release", None]


def test_a_canvas_of_signatures_gathered_in_a_list(codebase: Codebase) -> None:
    """A group or chain over a list the function builds: a comprehension, appends in a
    loop, or a list literal extended, passed whole or spread with `*`."""
    root = codebase({"feed/tasks.py": """
        from celery import chain, group, shared_task

        @shared_task
        def fetch(page):
            return page

        @shared_task
        def index(pages):
            return pages

        @shared_task
        def notify():
            return None

        def crawl(count):
            batch = [fetch.s(page) for page in range(count)]
            group(batch).apply_async()

        def crawl_in_ranges(count):
            steps = []
            for page in range(count):
                steps.append(fetch.s(page))
            group(*steps).apply_async()

        def rebuild():
            steps = [fetch.si(1)]
            steps.extend([index.si([1])])
            steps.append(notify.si())
            chain(*steps).apply_async()
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.CANVAS) == {
        "group@feed/tasks.py:17": "group(fetch)",
        "group@feed/tasks.py:23": "group(fetch)",
        "chain@feed/tasks.py:29": "chain(fetch -> index -> notify)"}
    assert [f.name for f in inv.flows] == ["fetch"]
    assert [s.task for s in inv.flows[0].steps] == ["fetch", "index", "notify"]


def test_a_beat_entry_added_to_a_schedule_by_key(codebase: Codebase) -> None:
    root = codebase({"site/settings.py": """
        from datetime import timedelta

        CELERY_BEAT_SCHEDULE = {
            "purge": {"task": "site.tasks.purge", "schedule": timedelta(hours=1)},
        }
        if REPORTING:
            CELERY_BEAT_SCHEDULE["report"] = {
                "task": "site.tasks.report",
                "schedule": timedelta(minutes=5),
            }
        """})
    assert set(found(inventory(root), FindingKind.BEAT)) == {
        "purge@site/settings.py:4", "report@site/settings.py:7"}


def test_paths_that_are_not_code_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="is neither a folder nor a file"):
        inventory(fifo)
    with pytest.raises(ConfigError, match="does not exist"):
        inventory(tmp_path / "missing")


def test_environments_and_caches_are_not_read(codebase: Codebase) -> None:
    root = codebase({
        "app.py": "from celery import shared_task\n\n@shared_task\ndef ok(): ...\n",
        ".venv/lib/site-packages/celery/app.py": "from celery import shared_task\n"
                                                 "@shared_task\ndef vendored(): ...\n",
        "node_modules/x/y.py": "def broken(:\n",
    })
    os.mkfifo(root / "pipe.py")  # never opened: a read would wait for a writer forever
    inv = inventory(root)
    assert inv.files == 1
    assert [f.name for f in inv.of_kind(FindingKind.TASK)] == ["ok"]


def test_the_codebases_tests_are_not_read(codebase: Codebase) -> None:
    """Tests launch tasks on mocks and set eager mode and fake brokers; none of it is the
    app's configuration or its flows."""
    root = codebase({
        "shop/tasks.py": """
            from celery import shared_task

            @shared_task
            def ship(order_id):
                return order_id
            """,
        "shop/tests/test_tasks.py": """
            from shop.tasks import ship

            def test_ship():
                ship.delay(1)
            """,
        "shop/tests/settings.py": "CELERY_TASK_ALWAYS_EAGER = True\n",
        "conftest.py": 'BROKER_URL = "memory://"\n',
        "shop/checkout_test.py": "from shop.tasks import ship\nship.delay(2)\n",
    })
    inv = inventory(root)
    assert inv.files == 1
    assert {f.kind for f in inv.findings} == {FindingKind.TASK}
    assert ("broker", "unknown") in inv.settings


def test_migrations_are_not_read_but_tasks_kept_below_them_are(codebase: Codebase) -> None:
    """A Django migration's frozen fields (`status = models.CharField(...)`) and an
    Alembic revision are no code of the app; saleor keeps its data-migration Celery
    tasks in `migrations/tasks/`, which its app autodiscovers."""
    root = codebase({
        "shop/__init__.py": "",
        "shop/migrations/__init__.py": "",
        "shop/migrations/0001_initial.py": """
            from django.db import migrations, models

            class Order(models.Model):
                status = models.CharField(max_length=20)
            """,
        "shop/migrations/versions/ab12_add.py": "def upgrade(): pass\n",
        "shop/migrations/tasks/__init__.py": "",
        "shop/migrations/tasks/shop3_22.py": """
            from celery import shared_task

            @shared_task(queue="data_migrations")
            def backfill_search_index():
                pass
            """,
    })
    inv = inventory(root)
    assert inv.files == 3  # shop/__init__.py and the tasks package's two files
    assert [(f.kind, f.name) for f in inv.findings] == [
        (FindingKind.TASK, "backfill_search_index")]


def test_the_apps_task_class_gives_its_tasks_their_defaults(codebase: Codebase) -> None:
    """saleor makes its app with `task_cls="saleor.core.tasks:RestrictWriterDBTask"`:
    every task of the app derives from it, so its class attributes are the tasks'
    defaults; a task's own option wins."""
    root = codebase({
        "shop/__init__.py": "",
        "shop/celeryconf.py": """
            from celery import Celery

            app = Celery("shop", broker="redis://", task_cls="shop.base:Audited")
            """,
        "shop/base.py": """
            from celery import Task

            class Audited(Task):
                acks_late = True
                max_retries = 5
            """,
        "shop/tasks.py": """
            from celery import shared_task
            from shop.celeryconf import app

            @app.task
            def ship(order_id):
                pass

            @shared_task(max_retries=1)
            def bill(order_id):
                pass
            """,
    })
    tasks = found(inventory(root), FindingKind.TASK)
    assert tasks == {
        "ship@shop/tasks.py:5": "shop.tasks.ship; @app.task; acks_late=True, max_retries=5",
        "bill@shop/tasks.py:9": "shop.tasks.bill; @shared_task; acks_late=True, max_retries=1",
    }


def test_look_alikes_are_not_celery(codebase: Codebase) -> None:
    root = codebase({
        "app/tasks.py": """
            import re
            from itertools import chain

            from celery import shared_task

            CELERY_LIKE_CONSTANT = 3  # a module constant, not a setting

            @shared_task
            def parse(text):
                match = re.match(r"(\\w+)", text)
                words = list(chain([1], [2]))
                return match.group(1), words

            def _send_task(name):
                return name
            """,
        "app/settings.py": "CELERY_TASK_ACKS_LATE = True\n",
    })
    inv = inventory(root)
    assert inv.of_kind(FindingKind.CANVAS) == ()
    assert [(f.name, str(f.location)) for f in inv.of_kind(FindingKind.SETTING)] == [
        ("task_acks_late", "app/settings.py:1")]
    assert inv.skipped == ()


def test_tasks_registered_by_calling_the_decorator(codebase: Codebase) -> None:
    root = codebase({"worker.py": """
        from celery import Celery, shared_task

        STEP = "shop.step"
        app = Celery("shop", broker="redis://")

        def step(self, order_id):
            return order_id

        def tick():
            return None

        def build():
            app.task(name=STEP, bind=True, acks_late=True)(step)
            shared_task(tick)
        """})
    tasks = found(inventory(root), FindingKind.TASK)
    assert tasks == {
        "step@worker.py:6": "shop.step; app.task(...)(step) at worker.py:13; name='shop.step', "
                            "bind=True, acks_late=True",
        "tick@worker.py:9": "worker.tick; shared_task(tick) at worker.py:14",
    }


def test_a_large_codebase_is_read_in_parallel_with_the_same_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    serial = to_json(inventory(ACME))
    monkeypatch.setattr(source, "PARALLEL_FROM", 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert to_json(inventory(ACME)) == serial


def test_a_script_without_a_main_guard_reads_a_large_codebase_once(tmp_path: Path) -> None:
    """A team's own script calls the library at its top level, as scripts do: reading in
    parallel neither runs that script again in each process nor breaks on it."""
    script = tmp_path / "count_tasks.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path

        from graduate.migrate.inventory import inventory, source

        with Path({str(tmp_path / "ran")!r}).open("a") as ran:
            ran.write("ran\\n")
        source.PARALLEL_FROM = 1
        os.cpu_count = lambda: 2
        print(inventory(Path({str(ACME)!r})).files)
    """))

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(inventory(ACME).files)
    assert (tmp_path / "ran").read_text() == "ran\n"


def test_a_canvas_called_directly_and_options_set_on_a_signature(codebase: Codebase) -> None:
    """Calling a chain, group or chord applies it asynchronously, as `.delay()` does;
    `.set(countdown=...)` and `signature(..., countdown=...)` delay the task like
    `apply_async(countdown=...)`; `.link`/`.on_error` on a signature built in place link."""
    root = codebase({"tasks.py": """
        from celery import Celery

        app = Celery("shop", broker="redis://")

        @app.task
        def reserve(order_id): ...

        @app.task
        def charge(order_id): ...

        @app.task
        def release(order_id): ...

        def checkout(order_id):
            (reserve.s(order_id) | charge.si(order_id))()

        def later(order_id):
            reserve.s(order_id).set(countdown=7200).delay()
            charge.signature((order_id,), countdown=5400).apply_async()
            charge.s(order_id).on_error(release.si(order_id)).delay()
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.CANVAS) == {
        "chain@tasks.py:15": "chain(reserve -> charge)",
        "link_error@tasks.py:20": "charge; link_error -> release",
    }
    assert found(inv, FindingKind.CALL) == {
        "reserve@tasks.py:18": ".delay from later(); countdown=7200",
        "charge@tasks.py:19": ".apply_async from later(); countdown=5400",
    }
    assert [(h.rule, str(h.location)) for h in inv.hazards] == [
        ("eta-beyond-visibility-timeout", "tasks.py:18"),
        ("eta-beyond-visibility-timeout", "tasks.py:19")]


def test_a_task_that_calls_another_inline_is_one_flow_with_it(codebase: Codebase) -> None:
    root = codebase({"jobs.py": """
        from celery import Task, shared_task
        import requests

        @shared_task
        def reserve(order_id):
            requests.post("https://stock/reserve", json={"id": order_id})
            notify(order_id)
            notify.apply((order_id,))

        @shared_task
        def notify(order_id):
            requests.post("https://mail/send", json={"id": order_id})

        class Export(Task):
            def run(self, order_id):
                return order_id

        def register(app):
            app.register_task(Export())
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.CALL) == {
        "notify@jobs.py:7": "called inline (in the caller's process, not queued) from task "
                            "reserve",
        "notify@jobs.py:8": "called inline (in the caller's process, not queued) from task "
                            "reserve",
    }
    assert [[s.task for s in flow.steps] for flow in inv.flows] == [
        ["Export"], ["reserve", "notify"]]


def test_a_task_reached_through_an_expression_is_skipped_with_the_reason(
        codebase: Codebase) -> None:
    root = codebase({"jobs.py": """
        import importlib
        from celery import Task, shared_task

        @shared_task
        def notify(order_id): ...

        def send(kind, order_id):
            getattr(importlib.import_module("jobs"), kind).delay(order_id)

        class Traced(Task):
            def apply_async(self, *args, **options):
                return super().apply_async(*args, **options)  # Celery's own: not dynamic
        """})
    inv = inventory(root)
    assert [(str(s.location), s.reason) for s in inv.skipped] == [
        ("jobs.py:8", "a task reached through getattr(importlib.import_module(\"jobs\"), kind), "
                      "known only at run time: not linked to a task")]


def test_an_app_named_celery_as_flask_projects_name_it(codebase: Codebase) -> None:
    root = codebase({"web/__init__.py": """
        from celery import Celery

        celery = Celery(__name__, broker="redis://localhost:6379/0")
        """, "web/jobs.py": """
        from web import celery

        @celery.task(bind=True, acks_late=True, max_retries=4)
        def export(self, report_id):
            return report_id
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.TASK) == {
        "export@web/jobs.py:4": "web.jobs.export; @celery.task; bind=True, acks_late=True, "
                                "max_retries=4"}
    assert [h.rule for h in inv.hazards] == ["late-ack-without-idempotency"]


def test_an_app_made_by_a_factory_function(codebase: Codebase) -> None:
    """`app = make_celery()`: the app is what the project's own function builds; its tasks
    and the settings the factory writes are that app's."""
    root = codebase({"svc/worker.py": """
        from celery import Celery

        def make_celery(name):
            made = Celery(name, broker="redis://cache:6379/0")
            made.conf.task_acks_late = True
            made.config_from_object("django.conf:settings", namespace="CELERY")
            return made

        app = make_celery("svc")
        """, "svc/jobs.py": """
        from svc.worker import app

        @app.task(max_retries=2)
        def rebuild(project_id):
            return project_id
        """, "svc/settings.py": """
        CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7200}
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.APP) == {
        "app@svc/worker.py:9": "made by svc.worker:make_celery() at svc/worker.py:4; "
                               "broker='redis://cache:6379/0'"}
    assert found(inv, FindingKind.TASK) == {
        "rebuild@svc/jobs.py:4": "svc.jobs.rebuild; @app.task; max_retries=2"}
    assert {f.name: f.location.path for f in inv.of_kind(FindingKind.SETTING)} == {
        "broker_url": "svc/worker.py", "task_acks_late": "svc/worker.py",
        "broker_transport_options": "svc/settings.py"}
    assert ("visibility_timeout", "7200 s (svc/settings.py:1)") in inv.settings
    assert [h.rule for h in inv.hazards] == ["late-ack-without-idempotency"]


def test_django_settings_kept_as_class_attributes(codebase: Codebase) -> None:
    """django-configurations: `class Base(Configuration)` holds the settings."""
    root = codebase({"site/worker.py": """
        from celery import Celery

        app = Celery("site")
        app.config_from_object("django.conf:settings", namespace="CELERY")

        @app.task
        def rebuild(project_id):
            return project_id
        """, "site/settings/base.py": """
        class Base:
            DEBUG = False
            CELERY_TASK_ACKS_LATE = True
            CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4 * 3600}
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.SETTING) == {
        "task_acks_late@site/settings/base.py:3": "Base.CELERY_TASK_ACKS_LATE = True",
        "broker_transport_options@site/settings/base.py:4":
            "Base.CELERY_BROKER_TRANSPORT_OPTIONS = {'visibility_timeout': 14400}"}
    assert ("visibility_timeout", "14400 s (site/settings/base.py:4)") in inv.settings
    assert [h.rule for h in inv.hazards] == ["late-ack-without-idempotency"]


def test_a_task_of_the_current_app(codebase: Codebase) -> None:
    root = codebase({"jobs.py": """
        import celery
        from celery import current_app

        @current_app.task(bind=True, acks_late=True)
        def export(self, report_id):
            return report_id

        @celery.current_app.task
        def purge():
            return None
        """})
    assert found(inventory(root), FindingKind.TASK) == {
        "export@jobs.py:5": "jobs.export; @current_app.task; bind=True, acks_late=True",
        "purge@jobs.py:9": "jobs.purge; @celery.current_app.task"}


def test_a_module_level_call_that_builds_no_app_is_no_app(codebase: Codebase) -> None:
    root = codebase({"svc/worker.py": """
        import logging

        def make_registry():
            return {}

        log = logging.getLogger(__name__)
        app = make_registry()

        @app.task
        def not_a_task():
            return 1
        """})
    inv = inventory(root)
    assert inv.of_kind(FindingKind.APP) == ()
    assert inv.of_kind(FindingKind.TASK) == ()


@pytest.mark.parametrize("deep", ["x = " + "-" * 40_000 + "1\n",
                                  "x = " + "(" * 30_000 + "1" + ")" * 30_000 + "\n",
                                  "x = " + "[" * 300 + "]" * 300 + "\n",
                                  "x = f" + "()" * 100_000 + "\n",
                                  "x = " + " + ".join(["1"] * 100_000) + "\n"])
def test_a_file_nested_too_deeply_to_parse_is_skipped_with_the_reason(
        codebase: Codebase, deep: str) -> None:
    """Generated code can nest thousands of levels deep; libcst's parser would crash on
    it (a segmentation fault at 30,000) or take minutes. It is skipped, the rest read."""
    root = codebase({"proj/__init__.py": "", "proj/generated.py": deep,
                     "proj/tasks.py": """
                         from celery import shared_task

                         @shared_task
                         def ping():
                             return "pong"
                     """})

    inv = inventory(root)

    assert [(str(s.location), s.reason) for s in inv.skipped] == [
        ("proj/generated.py:1", "nests expressions too deeply to parse (thousands of "
                                "levels, as generated code can): the file was not read")]
    assert [f.name for f in inv.of_kind(FindingKind.TASK)] == ["ping"]


# Line breaks of every kind libcst knows, decorators, comments and blank lines before a
# statement, a backslash continuation, brackets and strings over several lines, and
# syntax of every sort (the walk's order is checked on it).
_WRITTEN_EVERY_WAY = (
    "# a header comment\r\n\r\n"
    "import os.path as p, sys\r\n"
    "from . import (a as b,\r\n    c)\r\n"
    "@app.task(bind=True,\r\n          max_retries=3)\r\n"
    "# between decorators\n"
    "@other\n"
    "async def charge[T: int = int](self, order_id: T, /, *args, k=1, **kw) -> None:\n"
    "    note = '''one\n  two\r\n three'''\n"
    "    total = 1 + \\\n        2\r"
    "    charge.apply_async(\n        (order_id,),\n        countdown=60)\n"
    "    async with lock() as held, other as (x, y):\n"
    "        async for item in feed: await item\n"
    "    try:\n        raise E from None\n    except* (A, B) as group:\n        pass\n"
    "    finally:\n        del x[1:2, ::3]\n"
    "    match order:\n"
    "        case {'status': 'paid', **rest} | [1, *_] if rest:\n            pass\n"
    "        case Point(x=0) as pt:\n            global g\n"
    "    return [f\"{v!r:>{w}}\" if v else -v for v in (y := data)]\n"
    "\n\n"
    "class Order(Model, metaclass=Meta):  # trailing comment\n"
    "    status: str = 'new'\n"
    "    def pay(self): self.status = 'paid'; self.save()\n"
    "type Ids[K] = list[K]\n"
    "x = {**base, 'k': lambda q, *, r=2: (yield from q)}\n"
    "assert not x, 'no'\n"
)


_ACME_LIKE = """
    from celery import chain, shared_task

    @shared_task(
        acks_late=True,
    )
    def reserve(order_id: int) -> None:
        chain(reserve.s(order_id), charge.si(order_id)).apply_async(countdown=10)
    """


class _Trail(cst.CSTVisitor):
    """Records every node a visit enters and leaves, but whitespace and comments."""

    def __init__(self) -> None:
        super().__init__()
        self.trail: list[tuple[str, cst.CSTNode]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if not _layout_only(node):
            self.trail.append(("enter", node))
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if not _layout_only(original_node):
            self.trail.append(("leave", original_node))


def _layout_only(node: cst.CSTNode) -> bool:
    return isinstance(node, (cst.BaseParenthesizableWhitespace, cst.TrailingWhitespace,
                             cst.EmptyLine, cst.Comment, cst.Newline))


@pytest.mark.parametrize("written", [_WRITTEN_EVERY_WAY, textwrap.dedent(_ACME_LIKE), ""])
def test_a_modules_layout_is_libcsts_own(written: str) -> None:
    """`positions.layout` gives every node the start line libcst's PositionProvider gives
    it (the inventory's locations), and `positions.walk` visits nodes in the order
    libcst's visit does: the inventory reads a module as libcst would, at a fraction of
    the cost."""
    tree = cst.parse_module(written)
    expected = MetadataWrapper(tree, unsafe_skip_copy=True).resolve(PositionProvider)
    lines = layout(tree).lines
    assert lines.keys() == expected.keys()
    assert lines == {node: place.start.line for node, place in expected.items()}

    visited, walked = _Trail(), _Trail()
    tree.visit(visited)
    walk(tree, walked, layout(tree))
    assert [(event, type(node).__name__) for event, node in walked.trail] == [
        (event, type(node).__name__) for event, node in visited.trail]
    assert all(a is b for (_, a), (_, b) in zip(walked.trail, visited.trail, strict=True))


def test_an_app_whose_class_is_not_named_is_recognised_by_its_use(codebase: Codebase) -> None:
    """`app = import_string(path)(main=...)`: its class is known only at run time, but
    only a Celery app is configured from an object, autodiscovers tasks and takes
    `bind`/`ignore_result`; its tasks, settings and hazards are read as any app's."""
    root = codebase({"proj/celery.py": """
        from django.conf import settings
        from django.utils.module_loading import import_string

        from proj.appsettings import setting_app_class

        app_class = import_string(dotted_path=setting_app_class.value)
        app = app_class(main="proj")
        app.config_from_object(namespace="CELERY", obj="django.conf:settings")
        app.autodiscover_tasks(packages=lambda: settings.INSTALLED_APPS)
        """, "proj/appsettings.py": """
        from proj.options import Setting

        setting_app_class = Setting(name="APP_CLASS", default="celery.Celery")
        """, "proj/documents/tasks.py": """
        from proj.celery import app

        @app.task(bind=True, ignore_result=True, retry_backoff=True)
        def scan_document(self, document_id):
            return document_id

        @app.task
        def purge_cache():
            return None
        """, "proj/settings.py": """
        CELERY_TASK_ACKS_LATE = True
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.APP) == {
        "app@proj/celery.py:7": "its class is not named in the code; recognised as a Celery "
                                "app by its use: config_from_object at proj/celery.py:8, "
                                "autodiscover_tasks at proj/celery.py:9, "
                                "@app.task(bind=..., ignore_result=..., retry_backoff=...) "
                                "at proj/documents/tasks.py:3"}
    assert found(inv, FindingKind.TASK) == {
        "scan_document@proj/documents/tasks.py:4":
            "proj.documents.tasks.scan_document; @app.task; bind=True, ignore_result=True, "
            "retry_backoff=True",
        "purge_cache@proj/documents/tasks.py:8": "proj.documents.tasks.purge_cache; @app.task"}
    assert [(h.rule, h.task) for h in inv.hazards] == [
        ("late-ack-without-idempotency", "2 tasks")]


def test_an_app_made_at_once_from_a_class_known_at_run_time_is_recognised(
        codebase: Codebase) -> None:
    """`app = import_string(path)(main=...)` in one line is the same app."""
    root = codebase({"proj/celery.py": """
        from django.utils.module_loading import import_string

        app = import_string("proj.apps.ProjCelery")(main="proj")
        app.config_from_object("django.conf:settings", namespace="CELERY")
        """, "proj/tasks.py": """
        from proj.celery import app

        @app.task(bind=True)
        def scan_document(self, document_id):
            return document_id
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.APP) == {
        "app@proj/celery.py:3": "its class is not named in the code; recognised as a Celery "
                                "app by its use: config_from_object at proj/celery.py:4, "
                                "@app.task(bind=...) at proj/tasks.py:3"}
    assert set(found(inv, FindingKind.TASK)) == {"scan_document@proj/tasks.py:4"}


def test_an_app_recognised_by_celery_only_task_options_or_its_subclass(
        codebase: Codebase) -> None:
    root = codebase({"svc/worker.py": """
        from celery import Celery
        from platform_kit import load_app

        class TracedCelery(Celery):
            pass

        app = TracedCelery("svc")
        loaded = load_app("svc")

        @app.task
        def ping():
            return "pong"

        @loaded.task(acks_late=True, autoretry_for=(IOError,))
        def export(report_id):
            return report_id
        """})
    inv = inventory(root)
    assert set(found(inv, FindingKind.APP)) == {"app@svc/worker.py:7", "loaded@svc/worker.py:8"}
    assert set(found(inv, FindingKind.TASK)) == {"ping@svc/worker.py:11",
                                                 "export@svc/worker.py:15"}


def test_other_libraries_task_decorators_are_not_celery(codebase: Codebase) -> None:
    """huey, procrastinate, taskiq, invoke and a project's registry have `.task` too: a
    decorator without an option only Celery takes, on an object used as nothing else of
    Celery's, makes no app and no task."""
    root = codebase({"jobs/huey_jobs.py": """
        from huey import RedisHuey

        huey = RedisHuey("jobs")

        @huey.task(retries=3, retry_delay=10, priority=5)
        def resize(image_id):
            return image_id
        """, "jobs/queue_jobs.py": """
        import procrastinate
        from taskiq_redis import ListQueueBroker

        app = procrastinate.App(connector=procrastinate.PsycopgConnector())
        broker = ListQueueBroker("redis://localhost")

        @app.task(queue="sums", name="sum", retry=5)
        def add(a, b):
            return a + b

        @broker.task(task_name="mul", max_retries=3)
        async def mul(a, b):
            return a * b
        """, "tasks.py": """
        from invoke import task

        from jobs.registry import make_registry

        registry = make_registry()

        @task(help={"name": "who to greet"})
        def hello(c, name):
            c.run(f"echo {name}")

        @registry.task
        def step():
            return 1
        """})
    inv = inventory(root)
    assert inv.of_kind(FindingKind.APP) == ()
    assert inv.of_kind(FindingKind.TASK) == ()


def test_star_imports_of_the_codebases_own_modules_are_followed(codebase: Codebase) -> None:
    """A package re-exports its modules' tasks with `from .x import *`: the names are
    known from each module's literal `__all__`, else its public names. Only a computed
    `__all__` is left unlinked, with the reason; a star import of a library outside the
    codebase brings none of its tasks and is no note."""
    root = codebase({"shop/tasks/__init__.py": """
        from .mail_tasks import *
        from .order_tasks import *
        from .report_tasks import *
        """, "shop/tasks/mail_tasks.py": """
        from celery import shared_task

        __all__ = ["send_receipt"]

        @shared_task
        def send_receipt(order_id):
            return order_id
        """, "shop/tasks/order_tasks.py": """
        from celery import shared_task

        from .mail_tasks import *

        @shared_task(bind=True)
        def place_order(self, order_id):
            send_receipt.delay(order_id)

        def _private():
            return None
        """, "shop/tasks/report_tasks.py": """
        from celery import shared_task

        from . import names

        __all__ = names.REPORTS + ["build_report"]

        @shared_task
        def build_report(report_id):
            return report_id
        """, "shop/tasks/names.py": "REPORTS = []\n",
        "shop/views.py": """
        from django.forms.fields import *

        from shop.tasks import place_order, build_report

        def checkout(request):
            place_order.delay(request.order_id)

        def report(request):
            build_report.delay(request.report_id)
        """})
    inv = inventory(root)
    calls = {str(f.location): f.name for f in inv.of_kind(FindingKind.CALL)}
    assert calls == {"shop/tasks/order_tasks.py:7": "send_receipt",
                     "shop/views.py:6": "place_order"}
    assert [f.steps[1].task for f in inv.flows if len(f.steps) > 1] == ["send_receipt"]
    assert {str(s.location): s.reason for s in inv.skipped} == {
        "shop/tasks/__init__.py:3": "star import from shop.tasks.report_tasks: "
                                    "shop.tasks.report_tasks computes its __all__, so the "
                                    "names it brings are not known without running the "
                                    "code; tasks used through them are not linked"}


def test_of_two_star_imports_bringing_one_name_the_later_binds_it(codebase: Codebase) -> None:
    """As Python does: `notify` in the package is the second module's task, the one that
    texts through Twilio."""
    root = codebase({"shop/tasks/__init__.py": """
        from .email import *
        from .sms import *
        """, "shop/tasks/email.py": """
        from celery import shared_task

        @shared_task
        def notify(order_id):
            return order_id
        """, "shop/tasks/sms.py": """
        from celery import shared_task
        from twilio.rest import Client

        @shared_task
        def notify(order_id):
            Client().messages.create(to="+1", body=str(order_id))
        """, "shop/orders.py": """
        from celery import shared_task

        from shop.tasks import notify

        @shared_task
        def place_order(order_id):
            notify.delay(order_id)
        """})
    chained = [f for f in inventory(root).flows if f.entry == "place_order"]
    assert [[s.task for s in f.steps] for f in chained] == [["place_order", "notify"]]
    assert chained[0].systems == ("twilio",)


def test_two_entries_starting_one_task_are_two_flows(codebase: Codebase) -> None:
    """A webhook sender started by the notifier and by an operator's manual retry: the
    retry does not run after the notifier, so each is a flow of its own with the sender
    as a step; a group launched from a view stays one flow."""
    root = codebase({"hooks/tasks.py": """
        import requests
        from celery import group, shared_task

        @shared_task(acks_late=True)
        def notify(entry_ids):
            for entry_id in entry_ids:
                send_hook.apply_async(args=(entry_id,))

        @shared_task(bind=True, max_retries=5)
        def send_hook(self, entry_id):
            requests.post("https://hooks.example", json={"id": entry_id}, timeout=30)

        @shared_task
        def retry_all(hook_id):
            send_hook.delay(hook_id)

        @shared_task
        def thumbnail(image_id):
            return image_id

        @shared_task
        def index(image_id):
            return image_id
        """, "hooks/views.py": """
        from celery import group

        from hooks.tasks import index, thumbnail

        def upload(request):
            group(thumbnail.s(request.image_id), index.s(request.image_id)).delay()
        """})
    flows = {f.name: [s.task for s in f.steps] for f in inventory(root).flows}
    assert flows == {"notify": ["notify", "send_hook"], "retry_all": ["retry_all", "send_hook"],
                     "thumbnail": ["thumbnail", "index"]}


def test_celery_3s_task_decorator_makes_a_task(codebase: Codebase) -> None:
    root = codebase({"jobs.py": """
        from celery.task import task

        @task(ignore_result=True)
        def refresh():
            return None
        """})
    assert set(found(inventory(root), FindingKind.TASK)) == {"refresh@jobs.py:4"}


def test_another_librarys_periodic_task_decorator_is_no_beat_entry(codebase: Codebase) -> None:
    root = codebase({"jobs.py": """
        from scheduler import runner

        @runner.periodic_task(run_every=60)
        def refresh():
            return None
        """})
    inv = inventory(root)
    assert inv.of_kind(FindingKind.BEAT) == ()
    assert inv.of_kind(FindingKind.TASK) == ()


def test_an_app_subclass_with_periodic_tasks_and_celery_dot_celery(codebase: Codebase) -> None:
    """indico's `IndicoCelery(Celery)` named `celery`, with Celery 3's
    `@celery.periodic_task(run_every=...)`; superset's `celery.Celery()` after
    `import celery`."""
    root = codebase({"portal/core/app.py": """
        from celery import Celery

        class PortalCelery(Celery):
            def periodic_task(self, *args, **kwargs):
                return self.task(*args, **kwargs)
        """, "portal/core/celery.py": """
        from celery.schedules import crontab

        from portal.core.app import PortalCelery

        celery = PortalCelery("portal")

        @celery.periodic_task(name="heartbeat", run_every=crontab(minute="*/30"))
        def heartbeat():
            return None
        """, "portal/mail.py": """
        from portal.core.celery import celery

        @celery.task(name="send_email", bind=True, max_retries=None)
        def send_email(self, message_id):
            return message_id
        """, "dash/extensions.py": """
        import celery

        celery_app = celery.Celery()
        """, "dash/thumbnails.py": """
        from dash.extensions import celery_app

        @celery_app.task(name="cache_thumbnail", soft_time_limit=300)
        def cache_thumbnail(chart_id):
            return chart_id
        """})
    inv = inventory(root)
    assert found(inv, FindingKind.APP) == {
        "celery@portal/core/celery.py:5":
            "made from PortalCelery, the project's subclass of Celery",
        "celery_app@dash/extensions.py:3": ""}
    assert {f.name for f in inv.of_kind(FindingKind.TASK)} == {
        "heartbeat", "send_email", "cache_thumbnail"}
    assert found(inv, FindingKind.BEAT) == {
        "heartbeat@portal/core/celery.py:7": 'task heartbeat; schedule crontab(minute="*/30")'}


def test_a_root_that_is_a_package_knows_its_own_top_level_names(codebase: Codebase) -> None:
    """Reading `shop/` (a package): `from shop import thumbnails` is the root's own code,
    not a library named shop."""
    root = codebase({"shop/__init__.py": "from shop.media import thumbnails\n",
                     "shop/media.py": """
        import requests

        def thumbnails(image_id):
            return requests.post("https://img.example", json={"id": image_id}, timeout=5)
        """, "shop/tasks.py": """
        from celery import shared_task

        from shop import thumbnails

        @shared_task(time_limit=60)
        def resize(image_id):
            thumbnails(image_id)
        """})
    (flow,) = inventory(root / "shop").flows
    assert flow.systems == ("media",)


def linked(root: Path) -> Project:
    read = source.read_all(list(source.python_files(root)))
    return link(root, [r for r in read if isinstance(r, ModuleFacts)])


def test_among_a_passing_list_never_answers_from_another(codebase: Codebase) -> None:
    """`Project.among` indexes each list once; a list made for one question and dropped
    may leave its id to the next of the same length, which must not be answered from the
    first one's index (review L4)."""
    project = linked(codebase({"tasks.py": """
        from celery import shared_task

        @shared_task
        def first():
            pass

        @shared_task
        def second():
            pass
        """}))
    one, two = sorted(project.tasks, key=lambda t: t.short)
    for _ in range(20):
        assert project.among([(one, "a")], [one]) == [(one, "a")]
        assert project.among([(two, "b")], [two]) == [(two, "b")]
        assert project.among([(two, "c")], [one]) == []


FACTORIES = """
    import stripe
    import twilio
    from celery import Celery

    app = Celery("shop", broker="redis://localhost:6379/0")

    def register_payments():
        @app.task(name="payments.run")
        def run(order_id):
            stripe.Refund.create(order_id)
        return run

    def register_sms():
        @app.task(name="sms.run")
        def run(user_id):
            twilio.Client().messages.create(user_id)
        return run

    def register_invoices():
        def step(invoice_id):
            stripe.Invoice.pay(invoice_id)
        task = app.task(name="invoices.step")(step)
        return task

    def register_reminders():
        def step(user_id):
            twilio.Client().calls.create(user_id)
        task = app.task(step)
        return task
    """


def test_tasks_made_by_two_factories_under_one_name_keep_their_own_calls(
        codebase: Codebase) -> None:
    """Two factories each making a task `run` (Celery names them by `name=`): each task's
    calls are its own body's, not both (review L9)."""
    found = inventory(codebase({"tasks.py": FACTORIES}))
    assert {(f.location.line, f.detail.split(";")[0]) for f in found.findings
            if f.kind == FindingKind.TASK} == {
        (9, "payments.run"), (15, "sms.run"), (20, "invoices.step"), (26, "tasks.step")}
    systems = {f.location.line: f.systems for f in found.flows}
    assert systems == {9: ("stripe",), 15: ("twilio",), 20: ("stripe",), 26: ("twilio",)}


def test_the_chosen_settings_module_is_read_whatever_its_name(codebase: Codebase) -> None:
    """DJANGO_SETTINGS_MODULE may name a module whose name says nothing of settings
    (proj/envs/production.py), or one star-importing such a module: it is still the
    configuration read, and the settings-like siblings are the alternatives (review L10)."""
    named = codebase({
        "proj/__init__.py": "",
        "proj/celery.py": SETTINGS_APP.replace("{module}", "proj.envs.production"),
        "proj/envs/__init__.py": "",
        "proj/envs/production.py": 'CELERY_BROKER_URL = "amqp://rabbit//"\n'
                                   "CELERY_TASK_ACKS_LATE = True\n",
        "proj/settings_dev.py": 'CELERY_BROKER_URL = "redis://localhost"\n',
        "proj/settings_docker.py": 'CELERY_BROKER_URL = "redis://redis"\n',
    })
    settings = dict(inventory(named).settings)
    assert settings["broker"] == "rabbitmq"
    assert settings["task_acks_late"] == "True (proj/envs/production.py:2)"
    assert settings["alternative settings, not merged"] == (
        "proj/settings_dev.py, proj/settings_docker.py")


def test_a_module_the_chosen_settings_star_import_is_read_whatever_its_name(
        codebase: Codebase) -> None:
    star = codebase({
        "proj/settings/__init__.py": "from proj.celery_defaults import *\n"
                                     "DEBUG = False\nCELERY_TASK_ACKS_LATE = True\n",
        "proj/celery_defaults.py": 'CELERY_BROKER_URL = "amqp://rabbit//"\n',
        "proj/settings_dev.py": 'CELERY_BROKER_URL = "redis://localhost"\n',
        "proj/celery.py": SETTINGS_APP.replace("{module}", "proj.settings"),
    })
    settings = dict(inventory(star).settings)
    assert settings["broker"] == "rabbitmq"
    assert settings["alternative settings, not merged"] == "proj/settings_dev.py"
