"""Connections one process opens for itself: the ledger, the app database and Redis.

A prefork worker forks its pool children after the app is built. An SQLite connection
must not cross a fork, and sharing a socket between processes mixes their replies, so
every connection here is opened lazily by the process that uses it and reopened when
the process ID changes.

A soft time limit raises `SoftTimeLimitExceeded` wherever the task happens to be, even
between an SQLite `BEGIN` and the `try` that would roll it back. A connection left inside
a transaction blocks every later write of the pool child (seen in practice: the next
attempt hung until the hard limit killed the child). Hence two rules: a worker opens the
ledger (whose constructor runs such a transaction) before it takes a task, outside any
time limit; and after an interruption every connection of the process is closed, which
rolls back whatever it held, and the next use opens fresh ones.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from celery.exceptions import SoftTimeLimitExceeded

from graduate.db import Database
from graduate.errors import ConfigError, GraduateError
from graduate.ledger import Ledger


class ProcessResources:
    """The clients of the current process, opened on first use."""

    def __init__(self, services: Mapping[str, Any]) -> None:
        self.services = dict(services)
        self._pid = os.getpid()
        self._ledger: Ledger | None = None
        self._app_db: Database | None = None
        self._redis: redis.Redis | None = None

    def _check_pid(self) -> None:
        # After a fork the inherited clients belong to the parent: forget them, unclosed,
        # because closing them here would close the parent's connection state too.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._ledger = self._app_db = self._redis = None

    def ledger(self) -> Ledger:
        self._check_pid()
        if self._ledger is None:
            self._ledger = Ledger(self.services["ledger_url"])
        return self._ledger

    def app_db(self) -> Database:
        self._check_pid()
        if self._app_db is None:
            # The state machine commits twice a step (a lease, a move): an fsync each
            # would double what a step costs on SQLite, and graduate's faults kill
            # processes and servers, never the machine (docs/adr/0010).
            self._app_db = Database(self.services["app_db_url"], fsync_each_commit=False)
        return self._app_db

    def redis(self) -> redis.Redis:
        self._check_pid()
        if self._redis is None:
            url = self.services.get("result_backend_url")
            if not url:
                raise ConfigError("the Celery strategies need a Redis result backend; give one "
                                  "with --result-backend-url or GRADUATE_RESULT_BACKEND_URL")
            self._redis = redis.Redis.from_url(url)
        return self._redis

    def warm_up(self) -> None:
        """Open the ledger now, before any task (and its time limit) runs in this process."""
        # A failure here would make the pool restart the child in a loop; the first task
        # that needs the ledger reports it instead, with the same message.
        with contextlib.suppress(GraduateError):
            self.ledger()

    def close(self) -> None:
        """Close what this process opened (inherited clients are left to their owner)."""
        self._check_pid()
        if self._ledger is not None:
            self._ledger.close()
        if self._app_db is not None:
            self._app_db.close()
        if self._redis is not None:
            self._redis.close()
        self._ledger = self._app_db = self._redis = None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Run task code that a soft time limit may cut; if it does, drop every connection."""
        try:
            yield
        except SoftTimeLimitExceeded:
            self.discard()
            raise

    def discard(self) -> None:
        """Close every connection, whatever state an interruption left it in."""
        # Closing may fail on a connection cut mid-command; it is being thrown away anyway.
        with contextlib.suppress(Exception):
            self.close()
        self._ledger = self._app_db = self._redis = None
