"""`graduate inventory` on a public codebase: Celery's own examples (django, next-steps,
periodic-tasks), unpacked from Celery 5.7.0's source distribution on PyPI at test time,
with Celery's licence beside them (BSD 3-Clause; Copyright (c) Ask Solem, the Celery core
team and contributors). Each expectation below was checked by hand against those files."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.migrate.inventory import FindingKind, Inventory, Recommendation, inventory
from tests.migrate.conftest import CELERY_SDIST, celery_sdist


@pytest.fixture(scope="module")
def examples(celery_examples: Path) -> Inventory:
    return inventory(celery_examples)


def test_every_file_is_read(examples: Inventory) -> None:
    # django: demoapp (__init__, models, tasks, views), manage, proj (__init__, celery,
    # settings, urls, wsgi); next-steps: proj (__init__, celery, tasks), setup;
    # periodic-tasks: myapp. Not demoapp/migrations (2 files): migrations are never read.
    assert examples.files == 15
    assert examples.skipped == ()


def test_the_excerpt_keeps_its_licence(celery_examples: Path) -> None:
    licence = (celery_examples / "LICENSE").read_text()
    assert "Celery is licensed under The BSD License (3 Clause" in licence
    assert "Copyright (c) 2009, 2010, 2011, 2012 Ask Solem" in licence
    # Only the three example folders and the licence: nothing else of Celery is read.
    assert sorted(p.name for p in celery_examples.iterdir()) == [
        "LICENSE", "django", "next-steps", "periodic-tasks"]


def test_tasks_of_three_layouts(examples: Inventory) -> None:
    tasks = {(f.name, str(f.location)): f.detail for f in examples.of_kind(FindingKind.TASK)}
    assert tasks == {
        # Django app, @shared_task, found through autodiscover_tasks
        ("add", "django/demoapp/tasks.py:9"): "django.demoapp.tasks.add; @shared_task",
        ("mul", "django/demoapp/tasks.py:14"): "django.demoapp.tasks.mul; @shared_task",
        ("xsum", "django/demoapp/tasks.py:19"): "django.demoapp.tasks.xsum; @shared_task",
        ("count_widgets", "django/demoapp/tasks.py:24"):
            "django.demoapp.tasks.count_widgets; @shared_task",
        ("rename_widget", "django/demoapp/tasks.py:29"):
            "django.demoapp.tasks.rename_widget; @shared_task",
        # retry_kwargs countdown written as 10 * 60
        ("error_task", "django/demoapp/tasks.py:40"):
            "django.demoapp.tasks.error_task; @shared_task; bind=True, "
            "autoretry_for=[Exception], retry_kwargs={'max_retries': 2, 'countdown': 600}",
        ("error_backoff_test", "django/demoapp/tasks.py:51"):
            "django.demoapp.tasks.error_backoff_test; @shared_task; bind=True, "
            "autoretry_for=[Exception], retry_backoff=5, retry_jitter=False, "
            "retry_kwargs={'max_retries': 3}",
        # @app.task(bind=True, ignore_result=True) on the Django project's app
        ("debug_task", "django/proj/celery.py:21"):
            "django.proj.celery.debug_task; @app.task; bind=True, ignore_result=True",
        # include=['proj.tasks'] with `from .celery import app`
        ("add", "next-steps/proj/tasks.py:5"): "next-steps.proj.tasks.add; @app.task",
        ("mul", "next-steps/proj/tasks.py:10"): "next-steps.proj.tasks.mul; @app.task",
        ("xsum", "next-steps/proj/tasks.py:15"): "next-steps.proj.tasks.xsum; @app.task",
        # a single-module app with add_periodic_task
        ("say", "periodic-tasks/myapp.py:46"): "periodic-tasks.myapp.say; @app.task",
    }


def test_configuration_wherever_it_lives(examples: Inventory) -> None:
    settings = {(f.name, str(f.location)): f.detail
                for f in examples.of_kind(FindingKind.SETTING)}
    assert settings == {
        ("autodiscover_tasks", "django/proj/celery.py:17"): "every installed app",
        # The whole settings.py: only its four CELERY_ names are Celery's (namespace=
        # 'CELERY'); Django's own (TIME_ZONE, DATABASES, ...) are not taken for Celery's.
        ("broker_url", "django/proj/settings.py:10"):
            "CELERY_BROKER_URL = 'amqp://guest:guest@localhost'",
        ("accept_content", "django/proj/settings.py:14"): "CELERY_ACCEPT_CONTENT = ['json']",
        ("result_backend", "django/proj/settings.py:15"):
            "CELERY_RESULT_BACKEND = 'db+sqlite:///results.sqlite'",
        ("task_serializer", "django/proj/settings.py:16"): "CELERY_TASK_SERIALIZER = 'json'",
        # Celery(...) and conf.update(...) cite the line their call starts on
        ("broker_url", "next-steps/proj/celery.py:3"): "Celery(broker=...) = 'amqp://'",
        ("result_backend", "next-steps/proj/celery.py:3"): "Celery(backend=...) = 'rpc://'",
        ("include", "next-steps/proj/celery.py:3"): "Celery(include=...) = ['proj.tasks']",
        ("result_expires", "next-steps/proj/celery.py:9"): "result_expires = 3600",
        ("broker_url", "periodic-tasks/myapp.py:33"):
            "Celery(broker=...) = 'amqp://guest@localhost//'",
        ("timezone", "periodic-tasks/myapp.py:42"): "app.conf.timezone = 'UTC'",
    }
    apps = {str(f.location) for f in examples.of_kind(FindingKind.APP)}
    assert apps == {"django/proj/celery.py:8", "next-steps/proj/celery.py:3",
                    "periodic-tasks/myapp.py:33"}
    # Every broker URL is amqp://, so RabbitMQ and its default consumer timeout (30 min)
    assert examples.settings == (("broker", "rabbitmq"), ("consumer_timeout", "1800 s (default)"))


def test_beat_and_verdict(examples: Inventory) -> None:
    beat = [(f.name, str(f.location), f.detail) for f in examples.of_kind(FindingKind.BEAT)]
    assert beat == [("add every 10", "periodic-tasks/myapp.py:53", "task say; schedule every 10 s")]
    # No call sites, canvas, state machines or compensation anywhere in these examples
    assert {f.kind for f in examples.findings} == {
        FindingKind.APP, FindingKind.TASK, FindingKind.SETTING, FindingKind.BEAT}
    # Short, independent tasks on RabbitMQ without late ack: nothing to flag.
    assert examples.hazards == ()
    flows = {(f.name, str(f.location)): (f.recommendation, f.classification,
                                         f.estimated_seconds) for f in examples.flows}
    keep = (Recommendation.KEEP, "short-lived-local", 0.0)
    assert flows == {
        ("add", "django/demoapp/tasks.py:9"): keep, ("mul", "django/demoapp/tasks.py:14"): keep,
        ("xsum", "django/demoapp/tasks.py:19"): keep,
        ("count_widgets", "django/demoapp/tasks.py:24"): keep,
        ("rename_widget", "django/demoapp/tasks.py:29"): keep,
        # two retries 10 minutes apart: 20 minutes, medium-lived-queued
        ("error_task", "django/demoapp/tasks.py:40"):
            (Recommendation.HARDEN, "medium-lived-queued", 1200.0),
        # three retries backing off 5 s, 10 s, 20 s without jitter
        ("error_backoff_test", "django/demoapp/tasks.py:51"):
            (Recommendation.KEEP, "short-lived-local", 35.0),
        ("debug_task", "django/proj/celery.py:21"): keep,
        ("add_2", "next-steps/proj/tasks.py:5"): keep,
        ("mul_2", "next-steps/proj/tasks.py:10"): keep,
        ("xsum_2", "next-steps/proj/tasks.py:15"): keep,
        ("say", "periodic-tasks/myapp.py:46"): keep,
    }


@pytest.mark.parametrize(("required", "outcome"), [(False, pytest.skip.Exception),
                                                   (True, pytest.fail.Exception)])
def test_without_the_package_index_the_test_skips_but_fails_in_ci(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: bool,
        outcome: type[BaseException]) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setattr("tests.conftest.REQUIRE_SERVICES", required)

    with pytest.raises(outcome, match=r"pip download celery==5\.7\.0` failed: .*celery"):
        celery_sdist(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_cached_file_that_is_not_pypis_fails(tmp_path: Path) -> None:
    (tmp_path / CELERY_SDIST).write_bytes(b"not celery")

    with pytest.raises(pytest.fail.Exception, match="is not the file PyPI publishes"):
        celery_sdist(tmp_path)
