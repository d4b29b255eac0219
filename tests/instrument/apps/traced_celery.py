"""A team's Celery app that traces with OpenTelemetry: opentelemetry-instrumentation-celery's
CeleryInstrumentor, instrumented in each worker process as its documentation shows (in
`worker_process_init`, with an SDK tracer provider), and nowhere else: the code that
starts an order (graduate's harness here) does not trace.

Each task refuses to run outside the span the instrumentation started for it, so the
trace its effect records can only be the one that span is on. `ORDERS_SPAN_LINKS=1` turns
on the instrumentation's `use_span_links`: each task then starts a trace of its own,
linked to the sender's instead of continuing it.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

import graduate
from graduate.flow import InstanceRequest

app = Celery("traced_orders", broker=os.environ["ORDERS_BROKER_URL"],
             backend=os.environ["ORDERS_BROKER_URL"], set_as_current=False)
app.conf.task_default_queue = os.environ["ORDERS_QUEUE"]
app.conf.broker_connection_retry_on_startup = True


@worker_process_init.connect(weak=False)
def trace_this_worker(**_: Any) -> None:
    trace.set_tracer_provider(TracerProvider())
    CeleryInstrumentor().instrument(use_span_links=os.environ.get("ORDERS_SPAN_LINKS") == "1")


class GatewayTimeout(Exception):
    """The payment gateway did not answer: worth a retry."""


def in_its_span(task: Task) -> None:
    span = trace.get_current_span()
    if not (isinstance(span, ReadableSpan) and span.name == f"run/{task.name}"):
        raise RuntimeError(f"{task.name} runs outside the span CeleryInstrumentor starts "
                           f"for it (current span: {span!r})")


@app.task(bind=True)
def reserve(self: Task, order_id: str) -> str:
    in_its_span(self)
    with graduate.effect("stock.reserve", key=f"{order_id}:reserve"):
        pass
    return order_id


# Acknowledged once done and requeued when its worker process dies: a charge killed
# mid-way runs again from the same message (a redelivery).
@app.task(bind=True, max_retries=3, acks_late=True, reject_on_worker_lost=True)
def charge(self: Task, order_id: str, fail_times: int = 0) -> str:
    in_its_span(self)
    try:
        with graduate.effect("payments.charge", key=f"{order_id}:charge"):
            if self.request.retries < fail_times:
                raise GatewayTimeout("payment gateway timed out")
    except GatewayTimeout as error:
        raise self.retry(exc=error, countdown=0) from error
    return order_id


@app.task(bind=True)
def confirm(self: Task, order_id: str) -> str:
    in_its_span(self)
    with graduate.effect("mail.send", key=f"{order_id}:confirm"):
        pass
    return order_id


def start(request: InstanceRequest) -> None:
    """The declared start function: a chain whose charge fails once and is retried."""
    (reserve.s(request.instance_id) | charge.s(fail_times=1) | confirm.s()).apply_async()


def signal(instance_id: str, name: str, payload: dict[str, object]) -> None:
    """The declared signal function: a decision sends the confirmation, as the team's API
    would on an approval."""
    confirm.delay(instance_id)
