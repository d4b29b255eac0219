"""The Engine protocol on a team's own Celery app: its workers (and beat), its start and
signal functions, and what its broker still holds for an instance.

Celery keeps no record of a business instance; the team's tables are its own. So the
instance's progress comes from the ledger (`graduate.effect`), and what Celery holds
from the broker: a message that carries graduate's correlation header for the
instance, queued or taken but not acknowledged. The effective settings (the app's own,
a profile's overrides over them) go into the run's evidence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from graduate.adapters.app_engine import (
    app_environment,
    instance_flow,
    owes_notice,
    progress,
    start_app_worker,
    wait_ending,
)
from graduate.adapters.base import (
    HeldUp,
    HistoryEvent,
    InstanceState,
    InstanceStatus,
    WorkerGroup,
)
from graduate.adapters.celery import application
from graduate.adapters.celery.app import close_app
from graduate.adapters.celery.app_worker import SETTINGS_VARIABLE, connect_services, load_app
from graduate.adapters.celery.broker import BrokerView, message_eta, message_task_id
from graduate.adapters.celery.description import APP
from graduate.adapters.celery.instrument import install, instance_in
from graduate.adapters.celery.receipts import (
    instance_tasks_key,
    proven_dead,
    received_key,
    still_holds,
    taker_of,
    unacknowledged,
)
from graduate.adapters.celery.settings import TRANSPORT_OPTIONS
from graduate.apps import App, project_on_path
from graduate.errors import ConfigError, EngineError
from graduate.flow import Flow, InstanceRequest
from graduate.ledger import Ledger
from graduate.processes import ManagedProcess
from graduate.services.model import Services

MODULE = "graduate.adapters.celery.app_worker"
# A moving task is briefly in no list (popped, not yet in the unacked hash): a "no" is
# only given after a second look.
HOLD_SETTLE = 0.5


class CeleryAppEngine:
    """Runs a team's declared Celery app; judged against `flow`, what it implements."""

    name = APP.name
    capabilities = APP.capabilities

    def __init__(self, app: App, flow: Flow, services: Services, run_dir: Path, *,
                 settings: dict[str, Any] | None = None,
                 worker_services: Services | None = None) -> None:
        if not services.broker_url:
            raise ConfigError("a team's Celery app needs a broker; give it with --broker-url, "
                              "or let graduate start a local Redis")
        self.app = app
        self.declaration = app.engines["celery"]
        self.flow = flow
        self.run_dir = run_dir
        self.services = services
        self.worker_services = worker_services or services
        self.overrides = dict(settings or {})
        APP.check_settings(self.overrides)
        with project_on_path(app.project_dir):
            self._celery = load_app(self.declaration["app"])
        # The run's broker, also for what this process sends (start, signal).
        connect_services(self._celery, services.broker_url, services.result_backend_url)
        install()
        # Evidence: the team's own values, then what the profile changed.
        self.settings: dict[str, Any] = {**application.app_settings(self._celery),
                                         **self.overrides}
        transport = {**(self._celery.conf.broker_transport_options or {}),
                     **{k: v for k, v in self.overrides.items() if k in TRANSPORT_OPTIONS}}
        self._broker = BrokerView(services.broker_url, transport)
        self._ledger = Ledger(services.ledger_url)
        self._requests: dict[str, InstanceRequest] = {}
        self._launched: dict[str, int] = {}

    def start_workers(self, count: int) -> WorkerGroup:
        """Start `count` workers, and the app's beat when it declares one."""
        beat = [lambda: self._launch("beat")] if self.declaration["beat"] else []
        return WorkerGroup.start([*[self.start_worker] * count, *beat])

    def start_worker(self) -> ManagedProcess:
        return self._launch("worker")

    def replace(self, process: ManagedProcess) -> ManagedProcess:
        return self._launch("beat" if "-beat-" in process.name else "worker")

    def _launch(self, role: str) -> ManagedProcess:
        self._launched[role] = self._launched.get(role, 0) + 1
        name = f"{self.app.name}-celery-{role}-{self._launched[role]}"
        environ = app_environment(self.app, self.flow, self.worker_services, self.run_dir.name,
                                  {"broker_url": self.worker_services.broker_url,
                                   "result_backend_url": self.worker_services.result_backend_url})
        environ[SETTINGS_VARIABLE] = json.dumps(self.overrides)
        if role == "beat":
            arguments = ["beat", str(self.run_dir / f"{name}.schedule")]
        else:
            # One process per pool child, as the strategies run: a kill takes one task.
            arguments = ["--pool", "prefork", "--concurrency", "1", "--without-mingle",
                         "--without-gossip", "-Q", ",".join(self.declaration["queues"]),
                         # app_worker adds the PID: NAME-PID@HOST (`receipts.runs_here`).
                         "-n", f"{name}@%h", "--loglevel", "INFO"]
        return start_app_worker(name, MODULE, [self.declaration["app"], *arguments],
                                self.app, environ, self.run_dir)

    def server_versions(self) -> dict[str, str]:
        return self._broker.server_versions()

    def deploy(self, flow: Flow, previous: Flow | None = None) -> None:
        raise EngineError(f"graduate cannot deploy a new version of {self.app.name}'s own "
                          "code; deploy it yourself and run again")

    def start(self, request: InstanceRequest) -> None:
        # The first start's request is the instance's: a second start of its business key
        # (with a trace of its own) must not become what later signals carry.
        self._requests.setdefault(request.instance_id, request)
        with project_on_path(self.app.project_dir):
            application.start(self.declaration, request)

    def start_duplicate(self, request: InstanceRequest) -> str | None:
        """Celery keeps no record of which instances run: the team's start function
        decides. An error it raises is its refusal."""
        try:
            self.start(request)
        except Exception as error:  # the team's code refuses in a way of its own
            return f"the team's start function refused it: {type(error).__name__}: {error}"
        return None

    def cancel(self, instance_id: str) -> None:
        raise EngineError(f"app {self.app.name!r} declares no way to cancel an instance on "
                          f"Celery, so graduate cannot roll {instance_id} back")

    def signal(self, instance_id: str, name: str, payload: dict[str, Any]) -> None:
        if "signal" not in self.declaration:
            raise EngineError(f"app {self.app.name!r} declares no signal function")
        # Started by this engine, or by an earlier command (`graduate signal`): the
        # ledger keeps every instance's correlation.
        request = self._requests.get(instance_id) or self._ledger.instance(instance_id).request
        with project_on_path(self.app.project_dir):
            application.signal(self.declaration, request, name, payload)

    def statuses(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        return {iid: self.status(iid) for iid in instance_ids}

    def status(self, instance_id: str) -> InstanceStatus:
        effects = self._ledger.effects(instance_id=instance_id)
        flow = instance_flow(self.flow, self._ledger, instance_id)
        found = progress(flow, effects)
        if not found.state.finished:
            return InstanceStatus(found.state, found.done)
        if "outcome" not in self.declaration:
            return InstanceStatus(found.state, found.done, found.last_effect_at)
        # Whether and how it ended is the team's word (its table): a last task whose
        # worker died after its effect may yet run again. At a wait, the flow's words.
        said = application.outcome(self.declaration, instance_id)
        ending = None if said is None else wait_ending(flow, effects, said)
        if said is None or (ending is not None and owes_notice(flow, effects, ending)):
            return InstanceStatus(InstanceState.RUNNING, found.done)
        return InstanceStatus(found.state, found.done, found.last_effect_at, ending or "")

    def history(self, instance_id: str) -> list[HistoryEvent]:
        """Celery keeps no history of an instance: what the ledger saw of its tasks."""
        return [HistoryEvent(at=e.started_at, kind=f"{e.kind}-{e.outcome.value}",
                             detail=f"{e.step} attempt {e.attempt} in pid {e.worker_pid}")
                for e in self._ledger.effects(instance_id=instance_id)]

    def holds(self, instance_id: str) -> bool:
        """Whether the broker holds a message for the instance: queued on the app's queues
        or taken by a worker and not acknowledged (a countdown waiting in a worker's
        memory, a late-acknowledged task in flight; both come back once the visibility
        timeout passes). A task acknowledged early whose worker died is nowhere: lost.
        With a broker that cannot be read without consuming (AMQP), True: nothing proves
        the messages are gone."""
        if self.status(instance_id).state.finished:
            return False
        for look in range(2):
            if look:
                time.sleep(HOLD_SETTLE)
            messages = self._broker.messages(self.declaration["queues"])
            if messages is None:
                return True
            if any(_instance_of(message) == instance_id for message in messages):
                return True
        return False

    def held_until(self, instance_id: str) -> HeldUp | None:
        """When nothing can move the unfinished instance before a known time: each message
        carrying its correlation (on the app's queues, or taken and not acknowledged) was
        taken by a worker now dead, which graduate's worker marked when it received it
        (`receipts.mark_received`), and Redis gives it back no sooner than the visibility
        timeout after it was taken (kombu's restore sweep); or it has an ETA (a countdown)
        before which no worker runs it, whoever holds it. The earliest such moment and
        what holds it until then.

        None when anything may move it sooner, or cannot be told: a broker that cannot be
        read without consuming (RabbitMQ gives a dead consumer's messages back at once),
        an instance at a wait (the app's own timers, beat's sweeps, act on a wait as it
        pleases), a queued message due now, a message taken by a worker that still runs,
        runs on another host, or has not marked it yet, or a task of the instance that a
        live worker (or one that does not answer) received and still holds: acknowledged
        early, it is in the broker no more. Like `holds`, what the app's beat may send
        later is not foreseen."""
        if not self._broker.peekable:
            return None
        state = self.status(instance_id).state
        if state.finished or state is InstanceState.WAITING:
            return None
        messages = self._messages_of(instance_id)
        # Read after the messages: one taken meanwhile is seen taken (from then on).
        taken = self._broker.taken_at("") or {}
        if not messages:
            return None  # nothing holds it: `holds` says so
        client = self._broker.redis_client()
        now = time.time()
        earliest: list[tuple[float, str]] = []
        for message in messages:
            tid, eta = message_task_id(message), message_eta(message)
            taker = taker_of(client, tid, taken[tid]) if tid in taken else None
            if taker is not None and proven_dead(taker):
                back = taken[tid] + self._broker.visibility_timeout
                earliest.append((max(back, eta or back), "held by " + unacknowledged(
                    "a message", f"{taker}, now dead,", self._broker.visibility_timeout)))
            elif eta is not None and eta > now:
                earliest.append((eta, f"held by task {tid}, due no sooner than its ETA"))
            else:
                return None  # queued, or in a live (or unproven) worker's hands: any time
        # In the order a message moves (queue, unacknowledged, a worker's hands), then the
        # messages again: a task that finished meanwhile sent its next message before.
        in_broker = {message_task_id(m) for m in messages}
        if self._in_live_hands(client, instance_id, in_broker) or (
                {message_task_id(m) for m in self._messages_of(instance_id)}
                != {message_task_id(m) for m in messages}):
            return None
        until, why = min(earliest)
        return HeldUp(until, f"{why} (the first of {len(earliest)} message(s) that hold it)")

    def _messages_of(self, instance_id: str) -> list[dict[str, Any]]:
        """The messages carrying the instance's correlation, queued or unacknowledged."""
        return [m for m in self._broker.messages(self.declaration["queues"]) or []
                if _instance_of(m) == instance_id]

    def _in_live_hands(self, client: redis.Redis, instance_id: str,
                       in_broker: set[str]) -> bool:
        """Whether a worker that is not proven dead received a task of the instance and
        may still hold it (reserved or running; a task acknowledged early is in no broker
        list), or does not answer Celery's inspect to say it does not. A task whose
        message the broker still has (`in_broker`, held for its ETA say) is counted
        there, and no worker is asked about it."""
        tids = sorted(set(map(_text, client.smembers(instance_tasks_key(instance_id))))
                      - in_broker)
        receivers: dict[str, list[str]] = {}
        marks = client.mget([received_key(tid) for tid in tids]) if tids else []
        for tid, mark in zip(tids, marks, strict=True):
            if mark is not None and not proven_dead(_text(mark)):
                receivers.setdefault(_text(mark), []).append(tid)
        return any(still_holds(self._celery, worker, ids) is not False
                   for worker, ids in sorted(receivers.items()))

    def close(self) -> None:
        close_app(self._celery)
        self._broker.close()
        self._ledger.close()


def _instance_of(message: dict[str, Any]) -> str | None:
    """The instance whose correlation header a stored message carries, if any."""
    return instance_in(message.get("headers") or {})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
