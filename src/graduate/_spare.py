"""`python -m graduate._spare FOLDER MODULE idle|normal`: a worker process started before
it is needed.

`graduate.processes.Spares` spawns it as any worker (its own session, dying with its
parent). It imports MODULE's code (most of a second of a core), at idle priority when
told (only what no other process wants of the cores), then waits for one line on
standard input, the command line and log of the worker it is to be: `{"args": [...],
"log": PATH}`. It then runs MODULE as `python -m MODULE ARGS...` would, at normal
priority, writing to that log, with the rest of standard input (the worker's spec) left
for MODULE to read. End of input instead of that line: it was not needed, and exits.
FOLDER (its pool's) tells `ps` readers whose spare it is. See docs/adr/0022.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys

USAGE = ("usage: python -m graduate._spare FOLDER MODULE idle|normal, its order on standard "
         "input")


def main(argv: list[str]) -> None:
    if len(argv) != 3 or argv[2] not in ("idle", "normal"):
        sys.exit(USAGE)
    module = argv[1]
    idle = argv[2] == "idle" and _idle()
    importlib.import_module(module)
    # What it imported stays; the module itself runs afresh as __main__, as under
    # `python -m` (run_module warns of a module it finds imported already).
    del sys.modules[module]
    line = sys.stdin.readline()
    if not line:
        return
    order = json.loads(line)
    if idle:
        _normal()
    _write_to(order["log"])
    sys.argv = [module, *order["args"]]  # run_module puts the module's file first
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _idle() -> bool:
    """Idle priority (Linux's SCHED_IDLE: only cores nothing else wants), where this
    process can come back from it: tried once both ways first, so that no worker is
    ever left at idle priority."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        _normal()
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        _normal()  # raises if it cannot: the spare exits, and a worker starts without it
        return False
    return True


def _normal() -> None:
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _write_to(log: str) -> None:
    """Standard output and error to `log`, as `graduate.processes.spawn` would have
    opened it for this worker."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":
    main(sys.argv[1:])
