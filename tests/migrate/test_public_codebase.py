"""`graduate inventory` on a public codebase: Celery's own examples (an excerpt kept in
fixtures/celery_examples with its licence and source commit). Each expectation below was
checked by hand against those files."""

from __future__ import annotations

import pytest

from graduate.migrate.inventory import FindingKind, Inventory, Recommendation, inventory
from tests.migrate.conftest import CELERY_EXAMPLES


@pytest.fixture(scope="module")
def examples() -> Inventory:
    return inventory(CELERY_EXAMPLES)


def test_the_excerpt_carries_its_licence_and_source() -> None:
    assert "BSD" in (CELERY_EXAMPLES / "LICENSE").read_text() or "Redistribution" in (
        CELERY_EXAMPLES / "LICENSE").read_text()
    assert "5dc781f0bd5f36186bfcc74e0a4f9f654452c69b" in (
        CELERY_EXAMPLES / "SOURCE.md").read_text()


def test_tasks_of_three_layouts(examples: Inventory) -> None:
    tasks = {(f.name, str(f.location)) for f in examples.of_kind(FindingKind.TASK)}
    assert tasks == {
        # Django app, @shared_task, found through autodiscover_tasks
        ("add", "django/demoapp/tasks.py:9"), ("mul", "django/demoapp/tasks.py:14"),
        ("xsum", "django/demoapp/tasks.py:19"), ("count_widgets", "django/demoapp/tasks.py:24"),
        ("rename_widget", "django/demoapp/tasks.py:29"),
        ("error_task", "django/demoapp/tasks.py:40"),
        ("error_backoff_test", "django/demoapp/tasks.py:51"),
        # @app.task(bind=True) on the Django project's app
        ("debug_task", "django/proj/celery.py:21"),
        # include=['proj.tasks'] with `from .celery import app`
        ("add", "next-steps/proj/tasks.py:5"), ("mul", "next-steps/proj/tasks.py:10"),
        ("xsum", "next-steps/proj/tasks.py:15"),
        # a single-module app with add_periodic_task
        ("say", "periodic-tasks/myapp.py:46"),
    }
    details = {str(f.location): f.detail for f in examples.of_kind(FindingKind.TASK)}
    assert details["django/demoapp/tasks.py:40"].endswith(
        "bind=True, autoretry_for=[Exception], retry_kwargs={'max_retries': 2, "
        "'countdown': 600}")
    assert "retry_backoff=5" in details["django/demoapp/tasks.py:51"]


def test_configuration_wherever_it_lives(examples: Inventory) -> None:
    settings = {(f.name, str(f.location)): f.detail
                for f in examples.of_kind(FindingKind.SETTING)}
    assert settings[("broker_url", "django/proj/settings.py:10")] == (
        "CELERY_BROKER_URL = 'amqp://guest:guest@localhost'")
    assert settings[("include", "next-steps/proj/celery.py:3")] == (
        "Celery(include=...) = ['proj.tasks']")
    assert settings[("result_expires", "next-steps/proj/celery.py:9")] == (
        "result_expires = 3600")
    assert settings[("timezone", "periodic-tasks/myapp.py:42")] == "app.conf.timezone = 'UTC'"
    assert ("autodiscover_tasks", "django/proj/celery.py:17") in settings
    apps = {str(f.location) for f in examples.of_kind(FindingKind.APP)}
    assert apps == {"django/proj/celery.py:8", "next-steps/proj/celery.py:3",
                    "periodic-tasks/myapp.py:33"}
    assert ("broker", "rabbitmq") in examples.settings


def test_beat_and_verdict(examples: Inventory) -> None:
    beat = [(f.name, str(f.location), f.detail) for f in examples.of_kind(FindingKind.BEAT)]
    assert beat == [("add every 10", "periodic-tasks/myapp.py:53", "task say; schedule every 10 s")]
    # Short, independent tasks on RabbitMQ without late ack: nothing to flag, nothing to move.
    assert examples.hazards == ()
    assert examples.skipped == ()
    assert {f.recommendation for f in examples.flows} <= {Recommendation.KEEP,
                                                         Recommendation.HARDEN}
    # error_task retries twice, 10 minutes apart: 20 minutes, medium-lived-queued
    hardened = [f for f in examples.flows if f.recommendation == Recommendation.HARDEN]
    assert [(f.name, f.classification) for f in hardened] == [
        ("error_task", "medium-lived-queued")]
