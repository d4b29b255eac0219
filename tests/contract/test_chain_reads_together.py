"""The chain reads many instances' records together (`ReadsTogether`: judging 5,000
instances one at a time took 323 s), with the answers it gives one at a time: what holds
each instance, its history and its status, on a real Redis broker with no worker, each
instance's record and messages set up as a run leaves them."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from graduate.adapters import open_engine
from graduate.adapters.base import Engine, InstanceState, ReadsTogether
from graduate.adapters.celery.chain import (
    SIGNAL,
    claim_key,
    context_key,
    deliveries_key,
    task_id,
)
from graduate.adapters.celery.receipts import received_key
from graduate.config import Settings
from graduate.errors import CannotTell
from graduate.flow import Flow, load_flow
from graduate.runs.session import new_request
from graduate.services.model import Services
from tests.conftest import FlowFactory
from tests.contract.test_engines import NO_TIMER

EACH = 6  # instances of each kind
DEAD_PID = 2**22 + 17  # above Linux's default pid_max: no process has it
KINDS = ("queued", "finished", "nothing", "dead taker", "silent taker", "remote taker",
         "signal early", "signal parked")


def _answer(read: Any) -> Any:
    """What a read gave, an error as its kind and words (errors are never equal)."""
    return (type(read).__name__, str(read)) if isinstance(read, Exception) else read


@pytest.fixture
def chain(settings: Settings, tmp_path: Path) -> Any:
    def open_chain(flow: Flow, broker_url: str | None = None) -> Engine:
        services = Services(temporal=None, broker_url=broker_url or settings.broker_url,
                            result_backend_url=settings.broker_url,
                            ledger_url=settings.ledger, app_db_url=str(tmp_path / "app.db"))
        run_folder = tmp_path / "run-no-workers"
        run_folder.mkdir(exist_ok=True)  # rabbitmq_url deletes the queues of the runs it finds
        return open_engine("celery-chain", flow, services, run_folder)
    return open_chain


def set_up(flow: Flow, engine: Engine, client: redis.Redis) -> dict[str, str]:
    """Instances of each kind, as a run leaves them: instance -> its kind."""
    app = cast(Any, engine)._app
    first = flow.steps[0].name
    here = socket.gethostname()
    numbers = iter(range(1, 10_000))
    instances: dict[str, str] = {}
    for kind in KINDS:
        for _ in range(EACH if kind not in ("silent taker", "remote taker") else 2):
            request = new_request(flow, "together", next(numbers), "tenant")
            iid = request.instance_id
            instances[iid] = kind
            if kind == "queued":
                engine.start(request)  # its first task waits in the queue
            elif kind == "finished":
                app.backend.store_result(task_id(iid, "finish"), {
                    "outcome": "completed", "done": [first], "reason": ""}, "SUCCESS")
            elif kind.endswith("taker"):
                # A worker received the first task (acknowledged early) and is gone, or
                # its process runs but does not answer a ping, or it runs on another host
                # (registered workers elsewhere), whose processes cannot be seen.
                pid = DEAD_PID if kind != "silent taker" else os.getpid()
                host = here if kind != "remote taker" else f"not-{here}"
                client.set(received_key(task_id(iid, first)),
                           f"celery-chain-worker-1-{pid}@{host}")
                client.rpush(deliveries_key(iid, first, 0),
                             json.dumps({"at": time.time(), "redelivered": False}))
            elif kind.startswith("signal"):
                wait = flow.waits[0]
                app.backend.store_result(task_id(iid, first), {"done": [first]}, "SUCCESS")
                if kind == "signal parked":
                    client.set(context_key(iid, wait.name),
                       json.dumps({"context": {}, "deadline": time.time() + 60}))
                else:  # decided already: the signal moves nothing
                    client.set(claim_key(iid, wait.name), json.dumps({
                        "by": "deadline", "decision": None, "at": time.time(),
                        "action": "compensate", "reason": "passed"}))
                engine.signal(iid, wait.signal, {"decision": "approve"})
    return instances


def test_holds_histories_and_statuses_read_together_are_those_read_one_at_a_time(
        settings: Settings, flow_file: FlowFactory, chain: Any) -> None:
    flow = load_flow(flow_file())
    engine: Engine = chain(flow)
    assert isinstance(engine, ReadsTogether)
    assert settings.broker_url is not None
    try:
        instances = set_up(flow, engine, redis.Redis.from_url(settings.broker_url))
        ids = list(instances)

        alone = {iid: _answer(_or_error(engine.holds, iid)) for iid in ids}
        together = {iid: _answer(a) for iid, a in engine.holds_all(ids).items()}

        assert together == alone
        expected = {"queued": True, "finished": False, "nothing": False, "dead taker": False,
                    "signal early": False, "signal parked": True}
        for iid, kind in instances.items():
            if kind in ("silent taker", "remote taker"):
                assert alone[iid][0] == CannotTell.__name__, alone[iid]
            else:
                assert alone[iid] is expected[kind], (kind, alone[iid])

        histories = engine.histories(ids)
        assert {iid: _answer(h) for iid, h in histories.items()} == {
            iid: _answer(_or_error(engine.history, iid)) for iid in ids}
        for iid, kind in instances.items():
            kinds_seen = [event.kind for event in cast(list[Any], histories[iid])]
            if kind == "finished":
                assert kinds_seen == ["task SUCCESS"]
            if kind.endswith("taker"):
                assert kinds_seen == ["task started"]
            if kind == "signal early":
                assert "wait resolved" in kinds_seen

        statuses = engine.statuses_alone(ids)
        assert statuses == {iid: engine.status(iid) for iid in ids}
        assert {iid for iid, s in statuses.items()
                if not isinstance(s, Exception) and s.state is InstanceState.COMPLETED} == {
            iid for iid, kind in instances.items() if kind == "finished"}
    finally:
        engine.close()


@pytest.mark.rabbitmq
def test_on_rabbitmq_holds_read_together_cannot_tell_what_ready_messages_hold(
        settings: Settings, flow_file: FlowFactory, chain: Any, rabbitmq_url: str) -> None:
    """RabbitMQ shows ready messages only by count: read together as one at a time, each
    unfinished instance is one the chain cannot tell about, and a finished one is not held."""
    url = rabbitmq_url
    flow = load_flow(flow_file())
    engine = chain(flow, url)
    app = cast(Any, engine)._app
    requests = [new_request(flow, "rabbit", n, "tenant") for n in range(1, 6)]
    try:
        for request in requests[:4]:
            engine.start(request)
        done = requests[4].instance_id
        app.backend.store_result(task_id(done, "finish"), {
            "outcome": "completed", "done": [], "reason": ""}, "SUCCESS")
        ids = [r.instance_id for r in requests]

        together = {iid: _answer(a) for iid, a in engine.holds_all(ids).items()}

        assert together == {iid: _answer(_or_error(engine.holds, iid)) for iid in ids}
        assert together[done] is False
        for iid in ids[:4]:
            assert together[iid][0] == CannotTell.__name__
            assert "holds 4 ready message" in together[iid][1]
    finally:
        engine.close()  # the fixture deletes the queue, with the messages no worker took


def _or_error(read: Any, instance_id: str) -> object:
    try:
        return read(instance_id)
    except Exception as error:
        return error


@pytest.mark.parametrize("where", ["queued", "taken by a dead worker"])
def test_a_signal_that_claimed_its_wait_holds_the_instance_until_its_step_succeeded(
        settings: Settings, flow_file: FlowFactory, chain: Any, where: str) -> None:
    """A signal message whose task claimed the wait to run the step after it (its token
    in the claim) can still move the instance, redelivered or retried, until that step
    succeeded; one whose wait another claimed (the deadline), and another signal
    message (another token: its task finds the claim not its own), move nothing. Read
    alone and together alike. Taken by a worker now dead, unacknowledged, the claiming
    message holds its instance up until Redis gives it back; another does not. Nor does
    another message that ran to its end on a live worker after the claiming one was lost
    (acknowledged early): its received mark outlives it, and only its stored success says
    that no worker has it any more (ADR 0026, amended: it was "cannot tell")."""
    flow = load_flow(flow_file(**NO_TIMER))
    engine: Engine = chain(flow)
    assert isinstance(engine, ReadsTogether)
    assert settings.broker_url is not None
    client = redis.Redis.from_url(settings.broker_url)
    app = cast(Any, engine)._app
    wait, first = flow.waits[0], flow.steps[0].name
    kinds = {"step pending": True, "step succeeded": False, "claimed by the deadline": False,
             "another message's token": False, "another message's, run to its end": False}
    instances: dict[str, str] = {}
    claimed_by = "an earlier delivery's"
    taken: list[str] = []
    try:
        for number, kind in enumerate(kinds, start=1):
            iid = new_request(flow, "carried", number, "tenant").instance_id
            instances[iid] = kind
            app.backend.store_result(task_id(iid, first), {"done": [first]}, "SUCCESS")
            client.set(context_key(iid, wait.name),
                       json.dumps({"context": {}, "deadline": time.time() + 60}))
            claim = {"by": "signal", "decision": "approve", "at": time.time(),
                     "action": "continue", "reason": "", "token": claimed_by}
            if kind == "claimed by the deadline":
                claim = {**claim, "by": "deadline", "action": "compensate"}
                del claim["token"]
            client.set(claim_key(iid, wait.name), json.dumps(claim))
            if kind == "step succeeded":
                app.backend.store_result(task_id(iid, "activate"), {"done": []}, "SUCCESS")
            signal_id = task_id(iid, "signal", wait.signal)
            args = (iid, wait.signal, {"decision": "approve"})
            if kind == "another message's, run to its end":
                # Taken by a worker of this host whose process runs (this one: it answers
                # no ping) and run to its end there: the signal task's own code.
                client.set(received_key(signal_id),
                           f"celery-chain-worker-1-{os.getpid()}@{socket.gethostname()}")
                app.tasks[SIGNAL].apply(args=args, kwargs={"token": uuid.uuid4().hex},
                                        task_id=signal_id)
                assert app.backend.get_task_meta(task_id(iid, "activate"))["status"] == (
                    "PENDING")  # it ran no step
                assert app.backend.get_task_meta(signal_id)["status"] == "SUCCESS"
                continue
            # Queued: the claiming message again (redelivered, or retried), or another
            # signal message, sent as `ChainStrategy.signal` sends one, with its own token.
            token = uuid.uuid4().hex if kind == "another message's token" else claimed_by
            app.send_task(SIGNAL, args=args, kwargs={"token": token}, task_id=signal_id)
        if where == "taken by a dead worker":
            taken = _taken_by_dead_worker(client, app.conf.task_default_queue)
        ids = list(instances)

        alone = {iid: _answer(_or_error(engine.holds, iid)) for iid in ids}
        together = {iid: _answer(a) for iid, a in engine.holds_all(ids).items()}

        assert together == alone
        assert {instances[iid]: answer for iid, answer in alone.items()} == kinds
        held_up = {instances[iid]: engine.held_until(iid) is not None for iid in ids}
        assert held_up == {kind: where == "taken by a dead worker" and kind == "step pending"
                           for kind in kinds}
    finally:
        if taken:  # not left for a live worker's restore sweep to give back
            client.hdel("unacked", *taken)
            client.zrem("unacked_index", *taken)
        engine.close()


def _taken_by_dead_worker(client: redis.Redis, queue: str) -> list[str]:
    """Every message queued on `queue` taken as kombu takes one (into the unacked hash,
    indexed by when it was taken) by a worker of this host that is gone, which marked
    each task received (`receipts.mark_received`): their delivery tags."""
    worker = f"celery-chain-worker-1-{DEAD_PID}@{socket.gethostname()}"
    tags = []
    while (raw := cast(bytes | None, client.rpop(queue))) is not None:
        message = json.loads(raw)
        tags.append(tag := str(message["properties"]["delivery_tag"]))
        client.hset("unacked", tag, json.dumps([message, "", queue]))
        client.zadd("unacked_index", {tag: time.time()})
        client.set(received_key(message["headers"]["id"]), worker)
    return tags
