"""A server's data files belong to one live server: a second one is refused, naming the
pid that holds them; concurrent runs in one folder each get files of their own."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from graduate.errors import ServiceError
from graduate.services.local import LocalRedis, LocalTemporal
from tests.hardening.conftest import HELD_FLOW, output, start
from tests.hardening.proc import descendants, having


def test_a_second_redis_on_the_same_data_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = LocalRedis.create(tmp_path)
    first.start()
    try:
        assert first.process is not None
        with pytest.raises(ServiceError, match=rf"in use by a running server \(pid "
                                               rf"{first.process.pid}\)"):
            LocalRedis.create(tmp_path).start()
        first.process.kill()  # as a crash would: no chance to clean up

        second = LocalRedis.create(tmp_path)
        second.start()  # the lock died with its holder
        second.stop()
    finally:
        first.stop()


def test_a_second_temporal_server_on_the_same_database_is_refused(tmp_path: Path) -> None:
    first = LocalTemporal.create(tmp_path)
    first.start()
    try:
        assert first.process is not None
        with pytest.raises(ServiceError, match=rf"temporal\.db is in use by a running server "
                                               rf"\(pid {first.process.pid}\)"):
            LocalTemporal.create(tmp_path).start()
    finally:
        first.stop()


def test_a_command_takes_the_first_files_no_live_server_holds(tmp_path: Path) -> None:
    servers = [LocalRedis.create(tmp_path, name="redis-run", first_free=True) for _ in range(3)]
    try:
        assert [s.data_dir.name for s in servers] == ["redis-run", "redis-run-2", "redis-run-3"]
        for server in servers:
            server.start()
    finally:
        for server in servers:
            server.stop()
    # Once they are gone, the first files are free again: runs one after another share them.
    again = LocalRedis.create(tmp_path, name="redis-run", first_free=True)
    again.stop()
    assert again.data_dir.name == "redis-run"


SERVER_DATA = {"temporal": ("server start-dev", r"--db-filename (\S+)"),
               "celery": ("redis-server", r"--dir (\S+)")}


@pytest.mark.parametrize("engine", ["temporal", "celery-chain", "celery-state-machine"])
def test_three_runs_at_once_in_one_folder_all_succeed(project: Path, engine: str) -> None:
    (project / "held_start.py").write_text(HELD_FLOW)
    runs = [start(project, "run", "held_start:FLOW", "-e", engine, "--instances", "2",
                  "--signal", "approval=approve", "--timeout", "300", name=f"run-{n}")
            for n in range(3)]
    # Hold every run's first worker until all three runs are up at once.
    _wait_for(lambda: len(list(project.glob("worker-starting-*"))) >= 3, runs, project)
    binary, data_flag = SERVER_DATA[engine.split("-", maxsplit=1)[0]]
    data = set()
    for run in runs:
        for server in having(descendants(run.pid).values(), binary):
            # redis-server renames its process; its data folder is its working directory.
            found = re.search(data_flag, server.cmdline)
            data.add(found.group(1) if found else str(Path(f"/proc/{server.pid}/cwd")
                                                       .resolve()))

    (project / "release").touch()

    assert len(data) == 3, f"the three runs share server files: {data}"
    for number, run in enumerate(runs):
        assert run.wait(timeout=400) == 0, output(project, f"run-{number}")



def _wait_for(condition: Callable[[], bool], runs: list[subprocess.Popen[str]],
              project: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for number, run in enumerate(runs):
            assert run.poll() is None, output(project, f"run-{number}")
        assert time.monotonic() < deadline, "the runs did not all start in time"
        time.sleep(0.05)
