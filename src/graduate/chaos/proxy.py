"""A TCP proxy between workers and a broker or Temporal server, to cut the network.

It runs as a process of its own (so that cutting it never blocks the harness):
`python -m graduate.chaos.proxy LISTEN_PORT TARGET_HOST TARGET_PORT READY_FILE`.
It listens on 127.0.0.1 and forwards every connection to the target, both ways.

- SIGUSR1 cuts: a partition, not a refusal. Open connections stay open but carry no
  byte either way (what arrives is dropped), and new connections are accepted but go
  nowhere. Clients see silence, as they would when packets are lost, and only their
  own timeouts and health checks can tell.
- SIGUSR2 heals: the connections that lived through the cut are closed (a real
  network's timeouts end them sooner or later, and a client only recovers by
  reconnecting), and new connections are forwarded again.
- SIGTERM stops it.

After each change the process writes its state to `READY_FILE.state`, so `Proxy.cut()`
and `Proxy.heal()` return only once the change is in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from graduate.adapters.base import write_ready_file
from graduate.errors import ConfigError, ServiceError
from graduate.processes import ManagedProcess, free_port, spawn_until_ready, wait_until

READY_TIMEOUT = 30.0
STATE_TIMEOUT = 10.0
CHUNK = 65536

log = logging.getLogger("graduate.chaos.proxy")


class ProxyState(StrEnum):
    """What the proxy does to traffic now; STOPPED once its process has exited."""

    FORWARDING = "forwarding"
    CUT = "cut"
    STOPPED = "stopped"


def _state_path(ready_file: Path) -> Path:
    return ready_file.with_name(ready_file.name + ".state")


@dataclass(frozen=True)
class Proxy:
    """A running proxy process, seen from the harness."""

    name: str
    port: int
    target: str
    process: ManagedProcess
    ready_file: Path

    @classmethod
    def start(cls, run_dir: Path, name: str, target_host: str, target_port: int) -> Proxy:
        """Start a proxy to `target_host:target_port` on a free port; return once it accepts."""
        port = free_port()
        ready = run_dir / "ready" / f"{name}.ready"
        _state_path(ready).unlink(missing_ok=True)
        process = spawn_until_ready(
            name, [sys.executable, "-m", "graduate.chaos.proxy", str(port), target_host,
                   str(target_port), str(ready)],
            run_dir / "logs" / f"{name}.log", ready, what=f"network proxy {name}",
            timeout=READY_TIMEOUT)
        return cls(name=name, port=port, target=f"{target_host}:{target_port}",
                   process=process, ready_file=ready)

    @property
    def address(self) -> str:
        """Where clients connect instead of the target: `127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    @property
    def state(self) -> ProxyState:
        if not self.process.alive():
            return ProxyState.STOPPED
        try:
            return ProxyState(_state_path(self.ready_file).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return ProxyState.FORWARDING  # started, and no change asked for yet

    def cut(self) -> None:
        """Blackhole every connection, open or new, until `heal()`."""
        self._change(signal.SIGUSR1, ProxyState.CUT)

    def heal(self) -> None:
        """Close the connections that lived through the cut and forward new ones again."""
        self._change(signal.SIGUSR2, ProxyState.FORWARDING)

    def stop(self, grace: float = 10.0) -> None:
        self.process.stop(grace)

    def _change(self, signum: signal.Signals, wanted: ProxyState) -> None:
        if not self.process.alive():
            raise ServiceError(
                f"network proxy {self.name} is not running (exit code "
                f"{self.process.popen.returncode}); see {self.process.log_path}, and start "
                "a new one with Proxy.start"
            )
        self.process.popen.send_signal(signum)
        wait_until(lambda: self.state is wanted, timeout=STATE_TIMEOUT,
                   what=f"network proxy {self.name} to be {wanted.value}",
                   process=self.process)


# ---------------------------------------------------------------------------- the process


class _Link:
    """One client connection and, once connected, its connection to the target."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.client = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = False
        self.aborted = False

    def abort(self) -> None:
        # Abort, not close: whatever is still buffered belongs to the cut and is dropped.
        self.aborted = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()


class _Forwarder:
    """The proxy's state and its connections; signal handlers call cut and heal."""

    def __init__(self, target_host: str, target_port: int, state_file: Path) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.state_file = state_file
        self.forwarding = True
        self.links: set[_Link] = set()
        self.handlers: set[asyncio.Task[None]] = set()

    def write_state(self) -> None:
        state = ProxyState.FORWARDING if self.forwarding else ProxyState.CUT
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(state.value, encoding="utf-8")
        temporary.replace(self.state_file)

    def cut(self) -> None:
        self.forwarding = False
        for link in self.links:
            link.blackholed = True
        log.info("cut: %d open connection(s) blackholed", len(self.links))
        self.write_state()

    def heal(self) -> None:
        cut_off = [link for link in self.links if link.blackholed]
        for link in cut_off:
            link.abort()
        self.forwarding = True
        log.info("healed: %d connection(s) that lived through the cut closed", len(cut_off))
        self.write_state()

    async def stop(self) -> None:
        for link in list(self.links):
            link.abort()
        # Let every handler end on its own: one cancelled at exit logs a spurious error.
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self.links.add(link)
        handlers = {task for task in [asyncio.current_task()] if task is not None}
        self.handlers |= handlers
        try:
            await self._serve(link, reader)
        finally:
            self.links.discard(link)
            link.close()
            self.handlers -= handlers

    async def _serve(self, link: _Link, client: asyncio.StreamReader) -> None:
        if not self.forwarding:
            link.blackholed = True
            await _discard(client)  # until the client gives up or a heal closes it
            return
        try:
            upstream, link.upstream = await asyncio.open_connection(self.target_host,
                                                                    self.target_port)
        except OSError as error:
            # As the target would: refused (or unreachable), so the client sees it at once.
            log.info("target %s:%d unreachable: %s", self.target_host, self.target_port, error)
            return
        if link.aborted:  # healed while connecting: this link lived through the cut
            return
        await asyncio.gather(self._pump(link, client, link.upstream),
                             self._pump(link, upstream, link.client))

    async def _pump(self, link: _Link, source: asyncio.StreamReader,
                    target: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(CHUNK):
                if link.blackholed:
                    continue
                target.write(data)
                await target.drain()
            if not link.blackholed and target.can_write_eof():
                target.write_eof()
        except OSError:
            link.abort()


async def _discard(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(CHUNK):
            pass
    except OSError:
        return


async def serve(listen_port: int, target_host: str, target_port: int,
                ready_file: Path) -> None:
    """Forward 127.0.0.1:`listen_port` to the target until SIGTERM."""
    forwarder = _Forwarder(target_host, target_port, _state_path(ready_file))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, forwarder.cut)
    loop.add_signal_handler(signal.SIGUSR2, forwarder.heal)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    server = await asyncio.start_server(forwarder.handle, "127.0.0.1", listen_port)
    forwarder.write_state()
    write_ready_file(str(ready_file), os.getpid())
    log.info("forwarding 127.0.0.1:%d to %s:%d", listen_port, target_host, target_port)
    async with server:
        await stopping.wait()
        server.close()
        await forwarder.stop()
    log.info("stopped")


def main(argv: list[str]) -> None:
    if len(argv) != 4 or not argv[0].isdigit() or not argv[2].isdigit():
        raise ConfigError("usage: python -m graduate.chaos.proxy LISTEN_PORT TARGET_HOST "
                          "TARGET_PORT READY_FILE (graduate starts it itself, through "
                          "graduate.chaos.proxy.Proxy.start)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(serve(int(argv[0]), argv[1], int(argv[2]), Path(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
