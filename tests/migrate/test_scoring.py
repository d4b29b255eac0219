"""Each of the four recommendations on the smallest codebase that earns it, classified by
the Dealix inventory rules (short-lived-local, medium-lived-queued, long-lived-durable)
and scored on the source document's four criteria, each score with its evidence."""

from __future__ import annotations

from graduate.migrate.inventory import FlowCandidate, Recommendation, inventory
from tests.migrate.conftest import Codebase

APP = """
from celery import Celery

app = Celery("shop", broker="redis://localhost:6379/0")
app.conf.broker_transport_options = {"visibility_timeout": 86400}
"""


def only_flow(codebase: Codebase, tasks: str) -> FlowCandidate:
    (flow,) = inventory(codebase({"celery_app.py": APP, "tasks.py": tasks})).flows
    return flow


def leans(flow: FlowCandidate) -> dict[str, str]:
    return {score.criterion: score.leans for score in flow.scores}


def test_short_one_service_no_compensation_keeps_on_celery(codebase: Codebase) -> None:
    flow = only_flow(codebase, """
        from celery_app import app
        from pdf import render

        @app.task(time_limit=120)
        def make_pdf(doc_id):
            render.page(doc_id)
        """)
    assert (flow.classification, flow.recommendation) == (
        "short-lived-local", Recommendation.KEEP)
    assert flow.reasons == ("15 min or less", "1 service(s), no compensation",
                            "0 of 4 criteria lean to a workflow engine")
    assert set(leans(flow).values()) == {"celery"}


def test_medium_without_an_idempotency_key_is_kept_with_hardening(codebase: Codebase) -> None:
    flow = only_flow(codebase, """
        from celery_app import app
        from crm import client

        @app.task(autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=600)
        def sync_lead(lead_id):
            client.update(lead_id)
        """)
    assert flow.estimated_seconds == 3 * 600
    assert (flow.classification, flow.recommendation) == (
        "medium-lived-queued", Recommendation.HARDEN)
    assert flow.hardening == ("sync_lead: carry an idempotency key and set acks_late=True "
                              "(medium-lived-queued: Celery + idempotency key)",)
    assert set(leans(flow).values()) == {"celery"}


def test_long_on_one_criterion_is_spiked_first(codebase: Codebase) -> None:
    flow = only_flow(codebase, """
        from celery_app import app
        from mailer import client

        @app.task
        def send_drip(contact_id, idempotency_key):
            client.send(contact_id, idempotency_key=idempotency_key)

        def enrol(contact_id):
            send_drip.apply_async((contact_id, f"{contact_id}:drip"), countdown=3 * 86400 // 4)
        """)
    assert flow.estimated_seconds == 64800
    assert (flow.classification, flow.recommendation) == (
        "long-lived-durable", Recommendation.SPIKE_FIRST)
    assert flow.reasons == ("lasts over 4 h", "1 of 4 criteria lean to a workflow engine")
    assert leans(flow) == {"duration": "workflow", "state": "celery",
                           "compensation": "celery", "failure domain": "celery"}
    (duration,) = [s for s in flow.scores if s.criterion == "duration"]
    assert [(str(e.location), e.text) for e in duration.evidence] == [
        ("tasks.py:9", "send_drip starts after 64800 s (.apply_async)")]


def test_long_with_compensation_across_systems_graduates(codebase: Codebase) -> None:
    """The clients live in a package of the team's outside the folder read
    (`integrations.crm`): each module is its own system, not one called `integrations`."""
    flow = only_flow(codebase, """
        from celery import chain
        from celery_app import app
        from integrations import crm, esign

        @app.task
        def mark_sent(deal_id, idempotency_key):
            crm.mark_sent(deal_id, idempotency_key=idempotency_key)

        @app.task(bind=True, max_retries=2)
        def send_contract(self, deal_id, idempotency_key):
            try:
                esign.send(deal_id, idempotency_key=idempotency_key)
            except esign.Error as error:
                crm.revert_sent(deal_id)
                raise self.retry(exc=error, countdown=3600)

        def start(deal_id, key):
            chain(mark_sent.si(deal_id, key), send_contract.si(deal_id, key)).delay()
        """)
    assert flow.systems == ("crm", "esign")
    assert [s.task for s in flow.steps] == ["mark_sent", "send_contract"]
    assert (flow.classification, flow.recommendation) == (
        "long-lived-durable", Recommendation.GRADUATE)
    assert flow.reasons == ("needs compensation", "2 of 4 criteria lean to a workflow engine")
    assert leans(flow) == {"duration": "celery", "state": "celery",
                           "compensation": "workflow", "failure domain": "workflow"}
    evidence = {s.criterion: [(str(e.location), e.text) for e in s.evidence]
                for s in flow.scores}
    assert evidence["duration"] == [("tasks.py:15", "send_contract retries after 3600 s")]
    assert evidence["compensation"] == [
        ("tasks.py:14", "crm.revert_sent in except block of send_contract")]
    assert evidence["failure domain"] == [
        ("tasks.py:7", "mark_sent calls crm.mark_sent"),
        ("tasks.py:12", "send_contract calls esign.send"),
        ("tasks.py:14", "send_contract calls crm.revert_sent")]


def test_a_helper_that_only_logs_is_no_service(codebase: Codebase) -> None:
    """The project's own `log_exception(e)` (logging and traceback) commits nothing; a
    client module of its own, even one whose body calls nothing, is a service."""
    root = codebase({"celery_app.py": APP, "errors.py": """
        import logging
        import traceback

        def log_exception(error):
            logging.getLogger("shop").exception(error)
            logging.getLogger("shop").debug(traceback.format_exc())
        """, "crm.py": """
        def create_draft(deal_id):
            return {"id": deal_id}
        """, "tasks.py": """
        from celery_app import app
        from crm import create_draft
        from errors import log_exception

        @app.task(time_limit=120)
        def open_deal(deal_id):
            try:
                create_draft(deal_id)
            except Exception as error:
                log_exception(error)
        """})
    (flow,) = inventory(root).flows
    assert flow.systems == ("crm",)
    assert flow.reasons[1] == "1 service(s), no compensation"


def test_a_notice_of_a_refund_is_no_compensation(codebase: Codebase) -> None:
    """`send_order_refund_email_task` tells the customer of a refund; it undoes nothing,
    so its flow does not need compensation (a task that refunds does)."""
    flow = only_flow(codebase, """
        from celery_app import app
        from mailer import outbox

        @app.task
        def send_order_refund_email_task(order_id):
            try:
                outbox.deliver(order_id)
            except Exception:
                notify_cancel_failed(order_id)
        """)
    assert leans(flow)["compensation"] == "celery"
    assert flow.steps[0].role == "step"
    refund = only_flow(codebase, """
        from celery_app import app
        from payments import gateway

        @app.task
        def refund_order(order_id):
            gateway.refund(order_id)
        """)
    assert leans(refund)["compensation"] == "workflow"


def test_reporting_an_error_and_the_web_framework_are_no_services(codebase: Codebase) -> None:
    """A Flask app's task reads `current_app.config` and reports to Sentry: neither is a
    system its flow commits to."""
    flow = only_flow(codebase, """
        from flask import current_app
        from sentry_sdk import capture_exception
        from celery_app import app
        from registry import certificates

        @app.task(time_limit=120)
        def rotate(cert_id):
            try:
                certificates.rotate(cert_id, current_app.config.get("CA"))
            except Exception as error:
                capture_exception(error)
        """)
    assert flow.systems == ("registry",)


def test_a_context_entered_for_the_task_is_no_service(codebase: Codebase) -> None:
    """`with scopes_disabled():` and `with language(locale):` set up how the task runs:
    only the webhook call commits anything."""
    flow = only_flow(codebase, """
        import requests
        from django_scopes import scopes_disabled
        from celery_app import app
        from shop.i18n import language

        @app.task(time_limit=60)
        def announce(hook_url, locale, text):
            with scopes_disabled(), language(locale):
                requests.post(hook_url, data=text, timeout=30)
        """)
    assert flow.systems == ("requests",)


def test_a_client_built_or_entered_is_a_service(codebase: Codebase) -> None:
    """A client the task builds (`Client(sid, token)`) or enters and keeps (`with
    httpx.Client() as client:`, `with psycopg.connect(dsn) as db:`) is how it reaches
    the other system: each counts, though its calls go through a local name."""
    flow = only_flow(codebase, """
        import httpx
        import psycopg
        from twilio.rest import Client
        from celery_app import app

        @app.task(time_limit=60)
        def notify(sid, token, url, dsn):
            Client(sid, token).messages.create(to="+1", body="hi")
            with httpx.Client() as client:
                client.post(url)
            with psycopg.connect(dsn) as db:
                db.execute("update partners set notified = true")
        """)
    assert set(flow.systems) == {"twilio", "httpx", "psycopg"}


def test_a_library_that_only_computes_values_is_no_service(codebase: Codebase) -> None:
    """pretix's mail task transliterates a name (`text_unidecode`), builds calendar files
    (`vobject`), formats money (babel, through the project's filter) and draws a badge
    in the worker's scratch space (Pillow, as bookwyrm's previews): none of these
    talks to another system; the mail server and the webhook do. A library not known to
    compute only (`lxml`, which can open a URL) still counts."""
    root = codebase({"celery_app.py": APP, "shop/__init__.py": "", "shop/money.py": """
        from babel.numbers import format_currency

        def money_filter(value, currency):
            return format_currency(value, currency)
        """, "shop/tasks.py": """
        import smtplib
        import requests
        import vobject
        from lxml import etree
        from PIL import Image
        from text_unidecode import unidecode
        from celery_app import app
        from shop.money import money_filter

        @app.task(time_limit=60)
        def mail_send(to, name, total, hook, xml):
            subject = unidecode(name) + money_filter(total, "EUR")
            cal = vobject.iCalendar()
            Image.new("RGB", (40, 40)).save("/tmp/badge.png")
            smtplib.SMTP("mail").sendmail("shop", to, subject + cal.serialize())
            requests.post(hook, json={"to": to})
            etree.fromstring(xml)
        """})
    [flow] = inventory(root).flows
    assert flow.systems == ("lxml", "requests")


def test_a_helper_beside_the_task_talks_out_for_it(codebase: Codebase) -> None:
    """bookwyrm's broadcast_task runs `asyncio.run(async_broadcast(...))`, whose
    `aiohttp.ClientSession` posts to every recipient: the helper beside the task is
    looked through, and what it calls out to is the task's system."""
    flow = only_flow(codebase, """
        import asyncio
        import aiohttp
        from celery_app import app

        @app.task(time_limit=60)
        def broadcast_task(recipients, activity):
            asyncio.run(async_broadcast(recipients, activity))

        async def async_broadcast(recipients, data):
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(session.post(r, data=data) for r in recipients))
        """)
    assert flow.systems == ("aiohttp",)


def test_a_helper_calling_its_own_modules_helpers_is_no_client(codebase: Codebase) -> None:
    """saleor's `from_global_id_or_none` only calls `from_global_id_or_error` beside it,
    which decodes with the standard library: no system. A helper beside a client whose
    body is not shown (`_post`) is a client."""
    root = codebase({"celery_app.py": APP, "shop/__init__.py": "", "shop/ids.py": """
        import base64

        def from_global_id_or_error(global_id):
            return base64.b64decode(global_id).decode().split(":")

        def from_global_id_or_none(global_id):
            return from_global_id_or_error(global_id)[1] if global_id else None
        """, "shop/crm.py": """
        def _post(path, body):
            ...

        def create_deal(deal):
            return _post("/deals", deal)
        """, "shop/tasks.py": """
        from celery_app import app
        from shop.crm import create_deal
        from shop.ids import from_global_id_or_none

        @app.task(time_limit=60)
        def sync_deal(global_id):
            create_deal({"id": from_global_id_or_none(global_id)})
        """})
    [flow] = inventory(root).flows
    assert flow.systems == ("crm",)


def test_a_client_the_module_holds_is_a_service(codebase: Codebase) -> None:
    """`_hub = hubspot.HubSpot(...)` at module level, called through in a helper or the
    task: each call reaches HubSpot (the helper's module, `crm`, names it, as for any
    project client) or S3; a logger the module holds reaches nothing."""
    root = codebase({"celery_app.py": APP, "shop/__init__.py": "", "shop/crm.py": """
        import json
        import logging

        import hubspot

        _hub = hubspot.HubSpot(access_token="x")
        log = logging.getLogger(__name__)

        def push_contact(contact):
            log.info("pushing %s", contact)
            _hub.crm.contacts.basic_api.create(json.dumps(contact))
        """, "shop/tasks.py": """
        import boto3

        from celery_app import app
        from shop.crm import push_contact

        s3 = boto3.client("s3")

        @app.task(time_limit=60)
        def sync_contact(contact):
            push_contact(contact)
            s3.put_object(Bucket="b", Key="k", Body=b"")
        """})
    [flow] = [f for f in inventory(root).flows if f.entry == "sync_contact"]
    assert set(flow.systems) == {"crm", "boto3"}


def test_a_helper_computing_a_value_is_no_service(codebase: Codebase) -> None:
    """`data_dir()` joins paths and `round_amount()` rounds: the project's own helpers
    that compute a value commit nothing; one that sends mail through Django does."""
    root = codebase({"celery_app.py": APP, "paths.py": """
        import os

        from django.conf import settings

        def data_dir(*parts):
            return os.path.join(settings.DATA_DIR, *parts)
        """, "money.py": """
        from decimal import ROUND_HALF_UP, Decimal

        def round_amount(value):
            return Decimal(value).quantize(Decimal("0.01"), ROUND_HALF_UP)
        """, "mailer.py": """
        from django.core.mail import send_mail

        def send_receipt(to, amount):
            send_mail("Receipt", str(amount), "shop@example.com", [to])
        """, "tasks.py": """
        from celery_app import app
        from mailer import send_receipt
        from money import round_amount
        from paths import data_dir

        @app.task(time_limit=120)
        def close_invoice(invoice_id, to, amount):
            with open(data_dir("invoices", str(invoice_id))) as invoice:
                invoice.read()
            send_receipt(to, round_amount(amount))
        """})
    (flow,) = inventory(root).flows
    assert flow.systems == ("mailer",)


def test_a_library_named_like_a_module_of_the_project_is_still_a_library(
        codebase: Codebase) -> None:
    """`site/utils/requests.py` is the project's own helper module; `import requests` is
    still the HTTP library, and a local `request` object is not the `request` helper
    imported at the top of the module."""
    root = codebase({"site/__init__.py": "", "site/utils/__init__.py": "",
                     "site/celery_app.py": APP, "site/utils/requests.py": """
        import requests

        def request(method, url, **kwargs):
            return requests.request(method, url, timeout=30, **kwargs)
        """, "site/tasks.py": """
        import requests
        from django.http import HttpRequest

        from site.celery_app import app
        from site.utils.requests import request

        def render(request):
            return request.path

        @app.task(time_limit=120)
        def ping(url):
            requests.post(url, timeout=10)

        @app.task(time_limit=120)
        def rebuild(page_id):
            request = HttpRequest()
            render(request)
        """})
    flows = {f.name: f.systems for f in inventory(root).flows}
    assert flows == {"ping": ("requests",), "rebuild": ()}
