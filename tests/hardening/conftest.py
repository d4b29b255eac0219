"""Fixtures of the hardening suite: a project folder, and the command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import processes_mentioning
from tests.sample import copy_sample_spikes

REPO = Path(__file__).resolve().parents[2]
GRADUATE = [sys.executable, "-m", "graduate"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A user's project with the sample spike; nothing of it may outlive the test."""
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    copy_sample_spikes(tmp_path / "spikes")  # the tests name the sample's steps
    yield tmp_path
    leftovers = processes_mentioning(str(tmp_path))
    assert not leftovers, f"graduate left processes behind: {leftovers}"


def environment(**extra: str) -> dict[str, str]:
    """This environment without any GRADUATE_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    return {**env, "COLUMNS": "200", **extra}


def start(project: Path, *args: str, env: dict[str, str] | None = None,
          name: str = "graduate") -> subprocess.Popen[str]:
    """`graduate ARGS...` started in `project`, its output going to NAME.out (a file, so
    that a long run never blocks on a full pipe)."""
    with (project / f"{name}.out").open("w") as out:
        return subprocess.Popen([*GRADUATE, *args], cwd=project, env=env or environment(),
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def output(project: Path, name: str = "graduate") -> str:
    return (project / f"{name}.out").read_text()


def in_a_url(password: str) -> list[str]:
    """How `password` shows in a URL. The test server's password may be a common word
    (the database's own name, say), so the word alone would be found everywhere."""
    return [f":{password}@", f"password={password}"] if password else []


# A flow module whose import holds every worker at start-up (never the command itself)
# until the file `release` appears beside it; each held worker first writes a marker.
HELD_FLOW = '''
import os
import pathlib
import sys
import time

from graduate.flow import load_flow

HERE = pathlib.Path(__file__).parent
if sys.argv[0].endswith("worker.py"):
    (HERE / f"worker-starting-{os.getpid()}").touch()
    while not (HERE / "release").exists():
        time.sleep(0.05)
FLOW = load_flow(HERE / "spikes" / "partner_approval.toml")
'''
