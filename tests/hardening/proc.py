"""What a test sees of the processes a command starts: /proc, as any user of the machine.

A pid alone can be reused, so a process is named by its pid and its start time.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

POLL = 0.02


@dataclass(frozen=True)
class Seen:
    pid: int
    started: int  # clock ticks after boot
    cmdline: str


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time, state) of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int) -> dict[int, Seen]:
    """Every live process below `root`: its children, their children, and so on."""
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
            children.setdefault(stat[0], []).append(int(entry))
    found: dict[int, Seen] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if stats[pid][2] not in ("Z", "X"):
            found[pid] = Seen(pid, stats[pid][1], _cmdline(pid))
        todo.extend(children.get(pid, []))
    return found


def alive(process: Seen) -> bool:
    stat = _stat(process.pid)
    return stat is not None and stat[1] == process.started and stat[2] not in ("Z", "X")


def survivors(processes: Iterable[Seen], within: float) -> list[Seen]:
    """The processes still alive after up to `within` seconds (none, as soon as none is)."""
    deadline = time.monotonic() + within
    left = [p for p in processes if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(POLL)
        left = [p for p in left if alive(p)]
    return left


def watch(command: subprocess.Popen[str], until: Callable[[list[Seen]], bool],
          timeout: float) -> list[Seen]:
    """Every process seen below `command` (with each command line it had: a launcher
    execs its command) until `until` holds for what was seen, or `command` exits; an
    AssertionError after `timeout`."""
    seen: dict[tuple[int, int, str], Seen] = {}
    deadline = time.monotonic() + timeout
    while True:
        for process in descendants(command.pid).values():
            seen.setdefault((process.pid, process.started, process.cmdline), process)
        if until(list(seen.values())) or command.poll() is not None:
            return list(seen.values())
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                command.kill()
            out, err = command.communicate()
            raise AssertionError(f"not seen within {timeout}s among "
                                 f"{sorted(p.cmdline for p in seen.values())}\n{out}\n{err}")
        time.sleep(POLL)


def having(seen: Iterable[Seen], *needles: str) -> list[Seen]:
    """The processes seen whose command line contains every one of `needles`."""
    return [p for p in seen if all(n in p.cmdline for n in needles)]
