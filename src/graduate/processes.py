"""Child processes that graduate starts: each in its own process group, always stopped.

Every worker and server runs in a new session, so a signal reaches the whole group
(a Celery worker's pool children included) and nothing the tool started survives it.
On Linux, each also dies with the command that started it, even one killed with
SIGKILL: it starts through `graduate/_launch.py`, which sets the parent-death signal.
That signal follows the *thread* that started the child, so start processes from the
main thread (or one that lives as long as they should).
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from graduate.errors import ServiceError

POLL_INTERVAL = 0.05
LAUNCHER = Path(__file__).with_name("_launch.py")
# The deadline (monotonic) of the run whose processes are being started, if any: set by
# `ready_by` around a run, so that no process of the run waits for readiness past it.
_READY_BY: contextvars.ContextVar[float | None] = contextvars.ContextVar("ready_by",
                                                                         default=None)
SPARE_MODULE = "graduate._spare"
# The spares a run's first workers may take (`Spares.offered`), if any.
_OFFERED: contextvars.ContextVar[Spares | None] = contextvars.ContextVar("spares_offered",
                                                                         default=None)


@contextlib.contextmanager
def ready_by(deadline: float) -> Iterator[None]:
    """Within the block, `spawn_until_ready` waits for a process at most until `deadline`
    (monotonic): a run's deadline covers its start-up and every restart, whatever bound
    the process's own kind has."""
    token = _READY_BY.set(deadline)
    try:
        yield
    finally:
        _READY_BY.reset(token)


def time_left(limit: float) -> tuple[float, bool]:
    """At most `limit` seconds, less if the run's deadline (`ready_by`) comes first; and
    whether it does."""
    deadline = _READY_BY.get()
    if deadline is None or deadline - time.monotonic() >= limit:
        return limit, False
    return max(deadline - time.monotonic(), 0.0), True


@dataclass
class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # When it began as this process (a spare: when it was taken): it may run work before
    # it says it is ready, so a recovery is judged from here, not from its ready file.
    began_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def group_alive(self) -> bool:
        """Whether any process of the group (leader or children) is still running."""
        return group_alive(self.pid)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left after `grace` seconds."""
        stop_group(self.pid, grace, reap=self._reap)

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash would."""
        self.signal_group(signal.SIGKILL)
        stop_group(self.pid, 0.0, reap=self._reap)

    def _reap(self) -> None:
        # Our own child must be waited for, or it lingers as a zombie of this process.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(0)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def stop_group(pgid: int, grace: float, reap: Callable[[], None] | None = None) -> None:
    """SIGTERM to process group `pgid`, SIGKILL after `grace` seconds, until none is left."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if not group_alive(pgid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signum)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if reap is not None:
                reap()
            if not group_alive(pgid):
                return
            time.sleep(POLL_INTERVAL)
    if group_alive(pgid):
        raise ServiceError(f"process group {pgid} survived SIGKILL; stop it by hand")


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process belongs to process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # The leader first: while it runs (most of a stop's grace period) no scan of /proc
    # is needed, and group_alive is polled every POLL_INTERVAL.
    if _group_of_live(pgid) == pgid:
        return True
    return any(_state(pid) not in ("Z", "X", "") for pid in _group_members(pgid))


def running(pid: int) -> bool:
    """True while process `pid` exists on this host and is not a zombie (a killed child
    its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", "X", "")


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a Celery worker's pool children), oldest first."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                    found.append(int(entry))
    return sorted(found)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    members.append(int(entry))
    return members


def _group_of_live(pid: int) -> int | None:
    """The process group of `pid` if it is running (not a zombie), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[2]) if fields[0] not in ("Z", "X") else None


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def leave(code: int) -> NoReturn:
    """Exit with `code` after the exit handlers (log and trace flushes), without
    finalising the interpreter. A process that loaded the Temporal SDK can abort in
    finalisation (SIGABRT, "PyGILState_Release ... finalizing", sdk-python issue 300)
    when the SDK core's threads call into an interpreter going away: a command or
    worker that did its work would then exit -6."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def dying_with_this_process(argv: Sequence[str]) -> list[str]:
    """`argv` run through the launcher, so that it is killed when this process exits,
    even by SIGKILL (for a process started without `spawn`, a test's CLI say)."""
    # The parent-death signal is Linux's; elsewhere only the command's own cleanup runs.
    if sys.platform != "linux":
        return list(argv)
    return [sys.executable, "-I", "-S", str(LAUNCHER), str(os.getpid()), *argv]


def spawn(name: str, argv: Sequence[str], log_path: Path,
          env: Mapping[str, str] | None = None, cwd: Path | None = None, *,
          stdin: bytes | None = None, keep_fds: Sequence[int] = (),
          outlive_parent: bool = False, feed_later: bool = False) -> ManagedProcess:
    """Start `argv` in a new session with stdout and stderr going to `log_path`.

    `stdin` is written to the process's standard input, then closed: the way to hand it
    secrets, which a command line would show to every user of the machine. With
    `feed_later`, its standard input stays open for the caller to write (`feed`).
    `keep_fds` stay open in the process (a lock it must hold). Unless `outlive_parent`
    (a server that `graduate env up` keeps), the process is killed when this one exits.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv) if outlive_parent else dying_with_this_process(argv)
    process: ManagedProcess | None = None
    try:
        with log_path.open("ab") as log, _interrupts_held():
            popen = subprocess.Popen(
                command, stdin=subprocess.PIPE if stdin is not None or feed_later
                else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=None if env is None else dict(env), cwd=cwd, pass_fds=tuple(keep_fds),
            )
            process = ManagedProcess(name=name, popen=popen, log_path=log_path)
        # An interrupt held back above is raised here, once `process` can be stopped.
        if stdin is not None and not feed_later:
            feed(process, stdin)
    except BaseException:
        if process is not None:
            process.stop()
        raise
    return process


def feed(process: ManagedProcess, data: bytes) -> None:
    """Write `data` to the standard input of `process` (spawned with `feed_later`) and
    close it."""
    popen = process.popen
    assert popen.stdin is not None
    with contextlib.suppress(BrokenPipeError), popen.stdin as pipe:
        # A child that died before reading is reported by whoever waits for it.
        pipe.write(data)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then deliver them.

    Between fork and the ManagedProcess that owns the child, an interrupt would leave a
    child that nobody stops; held back, it arrives once the caller can clean up.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers run in the main thread only
        return
    held: list[int] = []
    previous = {signum: handler for signum in (signal.SIGINT, signal.SIGTERM)
                if (handler := signal.getsignal(signum)) is not None}
    for signum in previous:
        signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for number in held:
            signal.raise_signal(number)


def spawn_module(name: str, module: str, args: Sequence[str], log_path: Path,
                 ready_file: Path, *, stdin: bytes) -> ManagedProcess:
    """`python -m MODULE ARGS...` with `stdin` written to it, once a `ready_file` left by
    an earlier process is gone (see `spawn_awaiting`): a spare that has imported MODULE
    already, where the run offers one (`Spares.offered`), else a new process."""
    ready_file.unlink(missing_ok=True)
    spares = _OFFERED.get()
    if spares is not None:
        taken = spares.take(module, name, args, log_path, stdin)
        if taken is not None:
            return taken
    return spawn(name, [sys.executable, "-m", module, *args], log_path, stdin=stdin)


class Spares:
    """Worker processes started before a run needs them (ADR 0022).

    A worker's start is mostly its interpreter importing its SDK: most of a second of a
    core. A spare is `python -m graduate._spare FOLDER MODULE PRIORITY`, spawned as any
    worker (its own session, dying with this process), that imports MODULE's code and
    then waits for its command line on standard input. Within `offered`, a run's first
    workers take spares, so that their imports were done while the cores waited on an
    earlier run's engine; `refill` (once the run's instances started) spawns, at idle
    priority, as many new ones as the run started workers of each module. A worker
    started later (a replacement after a fault) never takes one: its start is part of
    the recovery being measured, and pays what an operator's restart pays. Spawn them
    (`stock`, `refill`) from the thread that lives as long as they should: their
    parent-death signal follows it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # their logs until taken; names them to `ps` readers
        self._idle: list[tuple[str, ManagedProcess]] = []
        self._started: list[str] = []  # modules of the workers started under the offer
        self._offering = False
        self._spawned = 0

    def __enter__(self) -> Spares:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    @property
    def waiting(self) -> list[ManagedProcess]:
        """The spares not taken yet."""
        return [process for _, process in self._idle]

    @contextlib.contextmanager
    def offered(self) -> Iterator[None]:
        """Within the block, until `refill`, `spawn_module` takes these spares; refilled
        at the end of the block unless it failed (then nothing is started any more)."""
        self._offering = True
        token = _OFFERED.set(self)
        try:
            yield
        except BaseException:
            self._offering = False
            self._started.clear()
            raise
        finally:
            _OFFERED.reset(token)
        self.refill()

    def take(self, module: str, name: str, args: Sequence[str], log_path: Path,
             stdin: bytes) -> ManagedProcess | None:
        """An idle spare of `module` turned into the worker `name` (`python -m MODULE
        ARGS...` writing to `log_path`, `stdin` on its standard input); None when there
        is none, or the offer is over."""
        if not self._offering:
            return None
        self._started.append(module)
        spare = next((p for m, p in self._idle if m == module and p.alive()), None)
        if spare is None:
            return None
        self._idle.remove((module, spare))
        try:
            # A spare still importing goes on at the priority of the worker it now is.
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setscheduler(spare.pid, os.SCHED_OTHER, os.sched_param(0))
            log_path.parent.mkdir(parents=True, exist_ok=True)
            order = json.dumps({"args": list(args), "log": str(log_path)})
            feed(spare, order.encode() + b"\n" + stdin)
        except BaseException:
            spare.stop()
            raise
        _drop_if_empty(spare.log_path)  # from now on it writes to `log_path`
        return ManagedProcess(name=name, popen=spare.popen, log_path=log_path)

    def refill(self) -> None:
        """The offer is over: one new spare for each worker started under it."""
        self._offering = False
        started, self._started = self._started, []
        self.stock(started, idle=True)

    def stock(self, modules: Sequence[str], *, idle: bool) -> None:
        """One new spare for each of `modules` (a module twice: two spares), importing at
        idle priority (while other runs go on) or at normal priority (while nothing but
        the caller's own start-up competes, the import overlapping it)."""
        for module in modules:
            self._spawned += 1
            log = self.folder / f"spare-{os.getpid()}-{self._spawned}.log"
            process = spawn(f"spare {module}", [
                sys.executable, "-m", SPARE_MODULE, str(self.folder), module,
                "idle" if idle else "normal"], log, feed_later=True)
            self._idle.append((module, process))

    def stop_all(self) -> None:
        """Stop every spare not taken (a taken one is its run's worker)."""
        idle, self._idle = self._idle, []
        for _, process in idle:
            process.stop()
            _drop_if_empty(process.log_path)


def _drop_if_empty(log: Path) -> None:
    with contextlib.suppress(OSError):
        if log.stat().st_size == 0:
            log.unlink()


def spawn_until_ready(name: str, argv: Sequence[str], log_path: Path, ready_file: Path, *,
                      what: str, timeout: float = 60.0,
                      stdin: bytes | None = None) -> ManagedProcess:
    """Start `argv` and return once it writes `ready_file`; stop it if it never does, and
    on any interruption (Ctrl-C) while it starts: until it is returned, it is ours."""
    process = spawn_awaiting(name, argv, log_path, ready_file, stdin=stdin)
    await_ready(process, ready_file, what=what, timeout=timeout)
    return process


def spawn_awaiting(name: str, argv: Sequence[str], log_path: Path, ready_file: Path, *,
                   stdin: bytes | None = None) -> ManagedProcess:
    """`spawn`, once a `ready_file` left by an earlier process is gone: its appearance
    then says this one is ready (`await_ready`)."""
    ready_file.unlink(missing_ok=True)
    return spawn(name, argv, log_path, stdin=stdin)


def await_ready(process: ManagedProcess, ready_file: Path, *, what: str,
                timeout: float = 60.0) -> None:
    """Return once `process` (spawned after `ready_file` was removed) writes `ready_file`;
    stop it if it never does, and on any interruption (Ctrl-C) while it starts."""
    try:
        wait_until(ready_file.exists, timeout=timeout, what=what, process=process)
    except BaseException:
        process.stop()
        raise


def wait_until(ready: Callable[[], bool], *, timeout: float, what: str,
               process: ManagedProcess | None = None) -> None:
    """Poll `ready` until it holds, for `timeout` seconds or until the run's deadline
    (`ready_by`), whichever comes first; fail early if `process` dies, with its log's
    tail."""
    timeout, cut = time_left(timeout)
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if process is not None and not process.alive():
            raise ServiceError(
                f"{what}: {process.name} exited with code {process.popen.returncode} before it "
                f"was ready. Its log ({process.log_path}) ends with:\n{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            where = f"; see {process.log_path}" if process else ""
            when = ", when the run's deadline passed" if cut else ""
            raise ServiceError(f"{what}: not ready after {timeout:.0f}s{when}{where}")
        time.sleep(POLL_INTERVAL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    Taken below the kernel's ephemeral range where there is one: a port the kernel hands
    out (bind to 0) is also where every outgoing connection takes its source port, so
    another process could take it before the server we name it to binds it.
    """
    low = _ephemeral_low()
    if low is not None and low > _FIRST_PORT + 1000:
        for _ in range(50):
            candidate = random.randrange(_FIRST_PORT, low)
            if port_is_free(candidate):
                return candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_FIRST_PORT = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int | None:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_taken(error: BaseException) -> bool:
    """Whether a server failed to start because another process took its port first."""
    return "address already in use" in str(error).lower()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_free_port(port: int | None, flag: str) -> int:
    """`port` if it is free (a free one if None); a clear error if something holds it."""
    if port is None:
        return free_port()
    if not 0 < port < 65536:
        raise ServiceError(f"{flag} {port} is not a TCP port; use 1-65535, or omit {flag} "
                           "to let graduate pick a free one")
    if not port_is_free(port):
        raise ServiceError(f"port {port} on 127.0.0.1 is already in use by another process; "
                           f"choose another with {flag}, or omit {flag} to let graduate pick a "
                           "free port")
    return port


@dataclass
class ProcessSet:
    """Every process one command started; stopping it stops them all, newest first."""

    processes: list[ManagedProcess] = field(default_factory=list)

    def add(self, process: ManagedProcess) -> ManagedProcess:
        self.processes.append(process)
        return process

    def stop_all(self, grace: float = 10.0) -> None:
        for process in reversed(self.processes):
            process.stop(grace)
        self.processes.clear()
