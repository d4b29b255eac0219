"""`python -I -S _launch.py PARENT_PID COMMAND...`: run COMMAND so that it dies with its parent.

graduate starts every worker and server through this launcher (see
`graduate.processes.spawn`). It asks Linux to SIGKILL the process when the thread that
started it exits (`PR_SET_PDEATHSIG`, which survives `exec`), so a CLI killed with
SIGKILL takes its servers and workers with it. It runs as a script, without site
packages or the graduate package, so that it costs a bare interpreter start only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
USAGE = "usage: python -I -S _launch.py PARENT_PID COMMAND [ARG...]"


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when `parent` (the thread that started it) exits.

    If the parent is already gone, exit now: nothing would deliver the signal later.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent:
        os._exit(1)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit(USAGE)
    die_with_parent(int(argv[0]))
    command = argv[1:]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
