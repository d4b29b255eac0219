"""A team's Celery app, as it would be written, with its side effects instrumented.

It knows nothing of graduate's runs: the correlation header, the instance and the ledger
come from the worker graduate starts (`graduate.adapters.celery.app_worker`). The
broker and queue come from the environment, as a team's settings module would read them.
"""

from __future__ import annotations

import os
import threading

from celery import Celery, chord, group

import graduate
from graduate.flow import InstanceRequest

app = Celery("orders", broker=os.environ["ORDERS_BROKER_URL"],
             backend=os.environ["ORDERS_BROKER_URL"], set_as_current=False)
app.conf.task_default_queue = os.environ["ORDERS_QUEUE"]
app.conf.broker_connection_retry_on_startup = True


class GatewayTimeout(Exception):
    """The payment gateway did not answer: worth a retry."""


@app.task
def reserve(order_id: str, item: str = "all") -> str:
    with graduate.effect("stock.reserve", key=f"{order_id}:reserve:{item}"):
        pass  # the stock service's client would be called here
    return order_id


@app.task(bind=True, max_retries=3)
def charge(self, order_id: str, fail_times: int = 0) -> str:  # type: ignore[no-untyped-def]
    try:
        with graduate.effect("payments.charge", key=f"{order_id}:charge"):
            if self.request.retries < fail_times:
                raise GatewayTimeout("payment gateway timed out")
    except GatewayTimeout as error:
        raise self.retry(exc=error, countdown=0) from error
    return order_id


@app.task
def confirm(previous: object, order_id: str = "") -> str:
    order = order_id or str(previous)
    with graduate.effect("mail.send", key=f"{order}:confirm"):
        pass
    return order


@app.task
def reserve_each(order_id: str, items: list[str]) -> str:
    """Reserve every item in parallel from inside a task: a group this task sends."""
    group(reserve.s(order_id, item) for item in items).apply_async()
    return order_id


@app.task
def confirm_from_thread(order_id: str) -> str:
    """Sends the confirmation from a thread of its own: a thread does not inherit the
    task's context, so the message leaves without graduate's correlation."""
    sender = threading.Thread(target=confirm.apply_async, args=([order_id],))
    sender.start()
    sender.join()
    return order_id


@app.task
def confirm_with_own_headers(order_id: str) -> str:
    """Sends the confirmation with headers of its own that blank graduate's: a stripped
    correlation header."""
    confirm.apply_async([order_id], headers={"graduate_correlation": None})
    return order_id


def reserve_all_then_confirm(order_id: str, items: list[str]) -> object:
    """Reserve every item in parallel, then confirm once all are reserved: a chord."""
    return chord(reserve.s(order_id, item) for item in items)(confirm.s(order_id=order_id))


def start(request: InstanceRequest) -> None:
    """The start function the app's declaration names: one order per instance."""
    (reserve.s(request.instance_id) | charge.s() | confirm.s()).apply_async()
