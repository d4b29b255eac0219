"""The `alone` mark: a test that measures the machine runs first, with no other test
running (a pytest plugin, loaded by tests/conftest.py).

CI's overhead bench compares graduate's throughput with the plain SDK's. Beside three
other xdist workers its ratios measured their load, not graduate: CI saw the state
machine at 0.32 on code that gives 0.81 alone and 0.73 beside three busy loops. So the
`alone` tests are handed out first (pyproject passes --no-loadscope-reorder so that
pytest-xdist keeps the order set here), and every other test waits for them to end
before it sets up, outside pytest-timeout's clock. A wait for a test that never reports
(its worker died) ends after ALONE_WAIT_AT_MOST, and the suite then runs anyway.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Generator
from pathlib import Path

import pytest

ALONE_WAIT_AT_MOST = 600.0
_ALONE = pytest.StashKey[tuple[str, ...]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "alone: measures the machine: runs first, with no other test running")


def _group_of(item: pytest.Item) -> str:
    return "_".join(sorted(str(mark.args[0] if mark.args else mark.kwargs.get("name", ""))
                           for mark in item.iter_markers("xdist_group")))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the items as pytest-xdist is to hand them out: the `alone` tests first, then
    the xdist groups, largest first (as xdist's own reordering would: each lane of crash
    tests starts first on its worker), then the rest as collected. Every worker orders
    its own collection, the same way."""
    sizes = collections.Counter(_group_of(item) for item in items)

    def place(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("alone"):
            return (0, 0)
        group = _group_of(item)
        return (1, -sizes[group]) if group else (2, 0)

    items.sort(key=place)


def _alone_tests(session: pytest.Session) -> tuple[str, ...]:
    """The node ids of the session's `alone` tests (after every plugin renamed its items:
    xdist's group suffix)."""
    if (found := session.config.stash.get(_ALONE, None)) is None:
        found = tuple(i.nodeid for i in session.items if i.get_closest_marker("alone"))
        session.config.stash[_ALONE] = found
    return found


def _done(config: pytest.Config, nodeid: str) -> Path:
    """The file that says an `alone` test ended, in a folder every xdist worker of the
    session shares: the controller's basetemp, whose subfolders the workers' are."""
    base: Path = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    folder = base.parent if hasattr(config, "workerinput") else base
    return folder / f"alone-{hashlib.sha1(nodeid.encode()).hexdigest()}.done"


@pytest.hookimpl(tryfirst=True, wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """An `alone` test runs, then says so; any other waits for every `alone` test."""
    alone = _alone_tests(item.session)
    if item.nodeid in alone:
        try:
            return (yield)
        finally:
            _done(item.config, item.nodeid).touch()
    waiting_since = time.monotonic()
    while not all(_done(item.config, nodeid).exists() for nodeid in alone):
        if time.monotonic() - waiting_since > ALONE_WAIT_AT_MOST:
            item.config.stash[_ALONE] = ()  # wait once, not before every test
            item.warn(pytest.PytestWarning(
                f"gave up after {ALONE_WAIT_AT_MOST:.0f} s waiting for the tests marked "
                f"alone to end ({', '.join(alone)}): their worker may have died"))
            break
        time.sleep(0.2)  # another worker's test: a file is the only event it leaves
    return (yield)
