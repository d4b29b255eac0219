"""Each hazard rule on the smallest codebase that has it, and on one that does not."""

from __future__ import annotations

import pytest

from graduate.migrate.inventory import FindingKind, Inventory, inventory
from tests.migrate.conftest import Codebase

REDIS_APP = """
from celery import Celery

app = Celery("shop", broker="redis://localhost:6379/0")
"""
RABBIT_APP = """
from celery import Celery

app = Celery("shop", broker="amqp://guest@localhost//")
"""


def rules(found: Inventory) -> list[tuple[str, str]]:
    return [(h.rule, str(h.location)) for h in found.hazards]


def test_countdown_beyond_the_default_visibility_timeout(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        from celery_app import app

        @app.task
        def remind(order_id):
            pass

        def later(order_id):
            remind.apply_async((order_id,), countdown=2 * 3600 + 1)
            remind.apply_async((order_id,), countdown=600)
        """})
    found = inventory(root)
    assert rules(found) == [("eta-beyond-visibility-timeout", "tasks.py:8")]
    assert "3600 s, Celery's default" in found.hazards[0].why
    assert "up to 3 copies" in found.hazards[0].why


def test_retry_countdown_is_an_eta_too(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        from celery_app import app

        @app.task(bind=True)
        def poll(self, job_id):
            raise self.retry(countdown=5400)
        """})
    assert rules(inventory(root)) == [("eta-beyond-visibility-timeout", "tasks.py:5")]


def test_a_broker_not_found_is_assumed_to_be_redis_and_said_so(codebase: Codebase) -> None:
    root = codebase({"tasks.py": """
        import os
        from celery import Celery

        app = Celery("shop", broker=os.environ["BROKER_URL"])

        @app.task
        def remind(order_id):
            pass

        def later(order_id):
            remind.apply_async((order_id,), countdown=7200)
        """})
    found = inventory(root)
    assert rules(found) == [("eta-beyond-visibility-timeout", "tasks.py:11")]
    assert "no broker URL found, Redis assumed" in found.hazards[0].why


def test_late_acked_time_limit_beyond_visibility_timeout(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP + """
app.conf.update(
    broker_transport_options={"visibility_timeout": 1800},
    task_acks_late=True,
)
""", "tasks.py": """
        from celery_app import app

        @app.task(time_limit=3000)
        def export(report_id, idempotency_key):
            pass

        @app.task(time_limit=600)
        def quick(report_id, idempotency_key):
            pass
        """})
    found = inventory(root)
    assert rules(found) == [("time-limit-beyond-visibility-timeout", "tasks.py:3")]
    assert "1800 s, set at celery_app.py:5" in found.hazards[0].why


def test_late_ack_needs_an_idempotency_key(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        from celery_app import app
        from payments import gateway

        @app.task(acks_late=True)
        def charge(order_id):
            gateway.charge(order_id)

        @app.task(acks_late=True)
        def charge_keyed(order_id):
            gateway.charge(order_id, idempotency_key=f"charge:{order_id}")
        """})
    assert rules(inventory(root)) == [("late-ack-without-idempotency", "tasks.py:5")]


def test_a_late_acked_task_that_claims_its_row_first_runs_once(codebase: Codebase) -> None:
    """An outbox: the task locks its row, leaves it alone unless it is queued, and marks
    it in flight (or swaps the state in one update); a redelivered message does nothing.
    A locked read that checks no state claims nothing."""
    root = codebase({"celery_app.py": REDIS_APP, "mail/__init__.py": "", "mail/models.py": """
        from django.db import models

        class OutgoingMail(models.Model):
            QUEUED, INFLIGHT, SENT, CANCELLED = "queued", "inflight", "sent", "cancelled"
            status = models.CharField(max_length=20)
        """, "mail/smtp.py": """
        import smtplib

        def deliver(mail):
            with smtplib.SMTP("localhost") as server:
                server.send_message(mail.message())
        """, "tasks.py": """
        from django.db import transaction

        from celery_app import app
        from mail.models import OutgoingMail
        from mail.smtp import deliver

        @app.task(acks_late=True)
        def send_mail(mail_id):
            with transaction.atomic():
                mail = OutgoingMail.objects.select_for_update().get(pk=mail_id)
                if mail.status != OutgoingMail.QUEUED:
                    return
                mail.status = OutgoingMail.INFLIGHT
                mail.save(update_fields=["status"])
            deliver(mail)

        @app.task(acks_late=True)
        def send_digest(mail_id):
            taken = OutgoingMail.objects.filter(pk=mail_id, status="queued").update(status="sent")
            if taken:
                deliver(OutgoingMail.objects.get(pk=mail_id))

        @app.task(acks_late=True)
        def resend(mail_id):
            with transaction.atomic():
                mail = OutgoingMail.objects.select_for_update().get(pk=mail_id)
                mail.status = OutgoingMail.INFLIGHT
                mail.save(update_fields=["status"])
            deliver(mail)

        @app.task(acks_late=True)
        def ship(mail_id):
            deliver(OutgoingMail.objects.get(pk=mail_id))
            OutgoingMail.objects.filter(pk=mail_id, status="new").update(status="shipped")

        @app.task(acks_late=True)
        def send_within(mail_id):
            with transaction.atomic():
                mail = OutgoingMail.objects.select_for_update().get(pk=mail_id)
                if mail.status == OutgoingMail.CANCELLED:
                    return
                deliver(mail)
                mail.status = OutgoingMail.SENT
                mail.save(update_fields=["status"])

        @app.task(acks_late=True)
        @transaction.atomic
        def send_atomic(mail_id):
            mail = OutgoingMail.objects.select_for_update().get(pk=mail_id)
            if mail.status != OutgoingMail.QUEUED:
                return
            mail.status = OutgoingMail.INFLIGHT
            mail.save(update_fields=["status"])
            deliver(mail)
        """})
    # A claim made after the call out (`ship`), or committed only with it: in the same
    # transaction (`send_within`), or the task's own (`send_atomic`), rolled back by a
    # crash, claims nothing.
    assert sorted((h.rule, h.task) for h in inventory(root).hazards) == [
        ("late-ack-without-idempotency", task)
        for task in ("resend", "send_atomic", "send_within", "ship")]


def test_an_apps_late_ack_is_one_hazard_at_its_setting_naming_its_tasks(
        codebase: Codebase) -> None:
    """task_acks_late for the whole app: one decision, so one hazard where it is made,
    listing the tasks without a key; each task's flow still counts it, and a task that
    sets acks_late itself keeps its own."""
    root = codebase({"celery_app.py": REDIS_APP + "app.conf.task_acks_late = True\n",
                     "tasks.py": """
        from celery_app import app
        from payments import gateway

        @app.task
        def charge(order_id):
            gateway.charge(order_id)

        @app.task
        def refund(order_id):
            gateway.refund(order_id)

        @app.task
        def capture(order_id):
            gateway.capture(order_id, idempotency_key=f"capture:{order_id}")

        @app.task(acks_late=True)
        def void(order_id):
            gateway.void(order_id)
        """})
    found = inventory(root)
    assert rules(found) == [("late-ack-without-idempotency", "celery_app.py:4"),
                            ("late-ack-without-idempotency", "tasks.py:17")]
    app_wide, own = found.hazards
    assert app_wide.task == "2 tasks"
    assert app_wide.why.endswith("their effects can apply twice: charge, refund")
    assert own.task == "void"
    counted = {f.entry: [h.task for h in f.hazards] for f in found.flows}
    assert counted["charge"] == ["2 tasks"]
    assert counted["refund"] == ["2 tasks"]


def test_reject_on_worker_lost_on_a_task_that_can_kill_its_worker(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        import subprocess
        from celery_app import app

        @app.task(acks_late=True, reject_on_worker_lost=True)
        def render(doc_id, idempotency_key):
            subprocess.run(["wkhtmltopdf", doc_id], check=True)

        @app.task(acks_late=True, reject_on_worker_lost=True)
        def tidy(doc_id, idempotency_key):
            return doc_id

        @app.task(reject_on_worker_lost=True, time_limit=60)
        def early_ack(doc_id):
            return doc_id
        """})
    found = inventory(root)
    assert rules(found) == [("reject-on-worker-lost-loop", "tasks.py:4")]
    assert "it calls code that can end its process (at tasks.py:6)" in found.hazards[0].why


def test_consumer_timeout_shorter_than_a_late_acked_time_limit(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": RABBIT_APP, "tasks.py": """
        from celery_app import app

        @app.task(acks_late=True, time_limit=3600)
        def reindex(idempotency_key):
            pass

        def nightly():
            reindex.apply_async(countdown=4 * 3600)
        """})
    found = inventory(root)
    assert rules(found) == [("consumer-timeout-below-time-limit", "tasks.py:3"),
                            ("eta-beyond-consumer-timeout", "tasks.py:8")]
    assert "1800 s, RabbitMQ's default" in found.hazards[0].why


def test_consumer_timeout_from_rabbitmq_conf(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": RABBIT_APP, "deploy/rabbitmq.conf": """
        # raised for the nightly reindex
        consumer_timeout = 7200000
        """, "tasks.py": """
        from celery_app import app

        @app.task(acks_late=True, time_limit=3600)
        def reindex(idempotency_key):
            pass
        """})
    found = inventory(root)
    assert rules(found) == []
    assert ("consumer_timeout", "7200 s (deploy/rabbitmq.conf:2)") in found.settings


def test_one_commitment_from_celery_and_from_a_langgraph_node(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "billing.py": """
        import stripe

        def refund(order_id):
            return stripe.Refund.create(metadata={"order": order_id})
        """, "tasks.py": """
        from celery_app import app
        from billing import refund

        @app.task
        def refund_order(order_id):
            refund(order_id)
        """, "agent.py": """
        from langgraph.graph import StateGraph
        from billing import refund

        def refund_node(state):
            refund(state["order_id"])
            return state

        graph = StateGraph(dict)
        graph.add_node("refund", refund_node)
        """})
    found = inventory(root)
    assert rules(found) == [("two-sources-of-truth", "tasks.py:6")]
    assert found.hazards[0].why.startswith(
        "billing.refund is called from Celery task refund_order (tasks.py:6) and from "
        "LangGraph node refund_node (agent.py:5)")


def test_newer_python_syntax_is_read_on_this_interpreter(codebase: Codebase) -> None:
    root = codebase({"tasks.py": """
        from celery import shared_task

        type Ids = list[int]

        @shared_task(max_retries=2)
        def batch[T = int](items: list[T]) -> None:  # a 3.13 type parameter default
            print(f"{items[0]!r:>{len(items)}}")
        """})
    found = inventory(root)
    assert [(f.kind.value, f.name, str(f.location)) for f in found.findings] == [
        ("task", "batch", "tasks.py:6")]
    assert found.skipped == ()


def test_each_app_is_judged_by_its_own_settings(codebase: Codebase) -> None:
    root = codebase({
        "billing/app.py": """
            from celery import Celery

            app = Celery("billing", broker="redis://localhost:6379/0")
            app.conf.task_acks_late = True
            """,
        "billing/tasks.py": """
            from billing.app import app

            @app.task
            def invoice(order_id):
                pass

            def later(order_id):
                invoice.apply_async((order_id,), countdown=2 * 3600)
            """,
        "mailer/app.py": """
            from celery import Celery

            app = Celery("mailer", broker="amqp://rabbit//")
            """,
        "mailer/tasks.py": """
            from mailer.app import app

            @app.task
            def send(order_id):
                pass

            def later(order_id):
                send.apply_async((order_id,), countdown=2 * 3600)
            """,
    })
    assert rules(inventory(root)) == [
        ("late-ack-without-idempotency", "billing/tasks.py:4"),
        ("eta-beyond-visibility-timeout", "billing/tasks.py:8"),
        ("eta-beyond-consumer-timeout", "mailer/tasks.py:8"),
    ]


def test_settings_made_inside_a_function_stay_with_it(codebase: Codebase) -> None:
    root = codebase({
        "app.py": REDIS_APP + """
@app.task
def ping():
    pass
""",
        "support/fixtures.py": """
            def worker_app(app):
                app.conf.task_acks_late = True  # a test fixture's own app
                return app
            """,
    })
    assert rules(inventory(root)) == []


def test_a_countdown_known_only_at_run_time_is_a_low_hazard(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        from celery_app import app

        @app.task
        def expire(approval_id):
            pass

        def request(approval_id, deadline):
            expire.apply_async((approval_id,), countdown=deadline)
        """})
    found = inventory(root)
    assert rules(found) == [("eta-not-known", "tasks.py:8")]
    assert found.hazards[0].severity == "low"
    assert "countdown=deadline, known only at run time" in found.hazards[0].why


def test_one_commitment_from_celery_and_from_an_activity_method(codebase: Codebase) -> None:
    """Temporal's samples hold activities as methods of a class that keeps the clients;
    the same commitment reached from one of them is found too."""
    root = codebase({"celery_app.py": REDIS_APP, "tasks.py": """
        import stripe
        from celery_app import app

        @app.task
        def charge(order_id):
            stripe.PaymentIntent.create(metadata={"order": order_id})
        """, "activities.py": """
        import stripe
        from temporalio import activity

        class PaymentActivities:
            def __init__(self, client):
                self.client = client

            @activity.defn(name="charge")
            async def charge(self, order_id: str) -> None:
                stripe.PaymentIntent.create(metadata={"order": order_id})
        """})
    found = inventory(root)
    assert rules(found) == [("two-sources-of-truth", "tasks.py:6")]
    assert found.hazards[0].why.startswith(
        "stripe.PaymentIntent.create is called from Celery task charge (tasks.py:6) and from "
        "Temporal activity PaymentActivities.charge (activities.py:10)")


def test_one_commitment_from_celery_and_from_a_langgraph_task(codebase: Codebase) -> None:
    root = codebase({"celery_app.py": REDIS_APP, "billing.py": """
        import stripe

        def refund(order_id):
            return stripe.Refund.create(metadata={"order": order_id})
        """, "tasks.py": """
        from celery_app import app
        from billing import refund

        @app.task
        def refund_order(order_id):
            refund(order_id)
        """, "agent.py": """
        from langgraph.func import entrypoint, task
        from billing import refund

        @task
        def refund_step(order_id):
            return refund(order_id)

        @entrypoint()
        def support_agent(order_id):
            return refund_step(order_id).result()
        """})
    found = inventory(root)
    assert rules(found) == [("two-sources-of-truth", "tasks.py:6")]
    assert found.hazards[0].why.startswith(
        "billing.refund is called from Celery task refund_order (tasks.py:6) and from "
        "LangGraph task refund_step (agent.py:6)")
    assert [f.name for f in found.of_kind(FindingKind.TASK)] == ["refund_order"]


def test_consumer_timeout_from_advanced_config_or_the_servers_arguments(
        codebase: Codebase) -> None:
    tasks = """
        from celery_app import app

        @app.task(acks_late=True, time_limit=3600)
        def reindex(idempotency_key):
            pass
        """
    compose = codebase({"celery_app.py": RABBIT_APP, "tasks.py": tasks,
                        "deploy/docker-compose.yml": """
        services:
          rabbitmq:
            image: rabbitmq:3.13
            environment:
              RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: "-rabbit consumer_timeout 7200000"
        """, "deploy/myrabbitmq.conf": "consumer_timeout = 60000\n"})
    found = inventory(compose)
    assert rules(found) == []
    assert ("consumer_timeout", "7200 s (deploy/docker-compose.yml:5)") in found.settings
    (compose / "deploy" / "docker-compose.yml").unlink()
    (compose / "deploy" / "advanced.config").write_text(
        "[\n  {rabbit, [{consumer_timeout, 600000}]}\n].\n")
    found = inventory(compose)
    assert rules(found) == [("consumer-timeout-below-time-limit", "tasks.py:3")]
    assert "600 s, set at deploy/advanced.config:2" in found.hazards[0].why


PIPELINE = """
from celery_app import app

@app.task(ignore_result=True)
def upload(file_id):
    create.apply_async(kwargs={"file_id": file_id})

@app.task(ignore_result=True{options})
def create(file_id):
    size.delay(file_id)

@app.task(ignore_result=True)
def size(file_id):
    checksum.delay(file_id){record}

@app.task(ignore_result=True)
def checksum(file_id):
    pass

@app.task
def notify(user_id):
    audit.delay(user_id)
    email.delay(user_id)

@app.task
def audit(user_id):
    pass

@app.task
def email(user_id):
    pass
"""


def pipeline(options: str = "", record: str = "") -> str:
    return PIPELINE.replace("{options}", options).replace("{record}", record)


def test_a_chain_of_early_acked_tasks_that_records_nothing(codebase: Codebase) -> None:
    """Mayan EDMS's upload: each task ends by starting the next, acknowledged before it
    runs; a worker dying mid-step loses every later step. One task starting two
    follow-ups (notify) is no chain."""
    root = codebase({"celery_app.py": REDIS_APP,
                     "tasks.py": pipeline()})
    found = inventory(root)
    assert rules(found) == [("unrecorded-task-chain", "tasks.py:5")]
    [hazard] = found.hazards
    assert hazard.task == "upload and the 3 tasks it starts"
    assert "(upload -> create -> size -> checksum)" in hazard.why
    [flow] = [f for f in found.flows if f.entry == "upload"]
    assert flow.hazards == (hazard,)
    domain = next(s for s in flow.scores if s.criterion == "failure domain")
    assert domain.leans == "workflow"
    assert flow.recommendation.value == "keep with hardening"
    assert any("record each instance's step" in h for h in flow.hardening)
    [notify] = [f for f in found.flows if f.entry == "notify"]
    assert notify.hazards == ()


def test_a_chain_that_acks_late_or_records_its_step_is_no_hazard(codebase: Codebase) -> None:
    late = codebase({"celery_app.py": REDIS_APP, "tasks.py": pipeline(
        options=", acks_late=True")})
    # create is acknowledged late: upload -> create and size -> checksum are no chain of 3
    assert "unrecorded-task-chain" not in {h.rule for h in inventory(late).hazards}
    recorded = codebase({"celery_app.py": REDIS_APP, "tasks.py": pipeline(
        record="\n    File.objects.filter(id=file_id).update(status='sized')")})
    assert "unrecorded-task-chain" not in {h.rule for h in inventory(recorded).hazards}


SHARED_LAST_TASK = """
from celery_app import app

@app.task
def ingest(file_id):
    parse.delay(file_id)

@app.task
def parse(file_id):
    {parse_then}.delay(file_id)

@app.task
def send_email(file_id):
    pass

@app.task
def welcome(user_id):
    send_email.delay(user_id)

@app.task
def reset_password(user_id):
    send_email.delay(user_id)

@app.task
def index(file_id):
    send_email.delay(file_id)
"""


@pytest.mark.parametrize("chain", [["ingest", "parse", "send_email"],
                                   ["ingest", "parse", "index", "send_email"]])
def test_a_chain_does_not_spread_to_callers_sharing_its_last_task(
        codebase: Codebase, chain: list[str]) -> None:
    """ingest -> parse -> send_email is a chain; welcome -> send_email and
    reset_password -> send_email are single follow-ups of their own flows, which a task
    shared with the chain does not make part of it (review M2). Read as one group, the
    3-task chain was missed (send_email is one hand-off from welcome) and the 4-task one
    marked every flow that sends mail."""
    tasks = SHARED_LAST_TASK.replace("{parse_then}", chain[2])
    found = inventory(codebase({"celery_app.py": REDIS_APP, "tasks.py": tasks}))
    [hazard] = found.hazards
    assert (hazard.rule, str(hazard.location)) == ("unrecorded-task-chain", "tasks.py:5")
    assert hazard.task == f"ingest and the {len(chain) - 1} tasks it starts"
    assert f"({' -> '.join(chain)})" in hazard.why
    entries = {f.entry for f in found.flows}
    assert {"ingest", "welcome", "reset_password"} <= entries

    def domain(entry: str) -> str:
        [flow] = [f for f in found.flows if f.entry == entry]
        assert [s.task for s in flow.steps][-1] == "send_email"
        assert flow.hazards == ((hazard,) if entry == "ingest" else ())
        return next(s.leans for s in flow.scores if s.criterion == "failure domain")

    assert domain("ingest") == "workflow"
    assert domain("welcome") == "celery"
    assert domain("reset_password") == "celery"
