"""Calls for the lanes of `tests/unit/test_cells.py`: a lane process unpickles its cells'
calls by module name, so they live in a module it can import (`tests.lane_calls`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from graduate.timescale import TimeScale


def times(n: int, m: int, shared: object, started: Callable[[], None]) -> int:
    started()
    return n * m


@contextlib.contextmanager
def opened(path: str) -> Iterator[str]:
    """What a lane opens once: a file that names the lane's process while it is open."""
    Path(path).write_text(str(os.getpid()))
    yield path
    Path(path).unlink()


def opened_by(shared: str, started: Callable[[], None]) -> tuple[int, str]:
    """The process the cell ran in, and the one that opened its lane's `shared`."""
    return os.getpid(), Path(shared).read_text()


def parse(text: str, shared: object, started: Callable[[], None]) -> TimeScale:
    return TimeScale.parse(text)
