"""Connections one process opens for itself: the ledger, the app database and Redis.

A prefork worker forks its pool children after the app is built. An SQLite connection
must not cross a fork, and sharing a socket between processes mixes their replies, so
every connection here is opened lazily by the process that uses it and reopened when
the process ID changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis

from graduate.db import Database
from graduate.errors import ConfigError
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
            self._app_db = Database(self.services["app_db_url"])
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
