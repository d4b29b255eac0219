"""`graduate matrix --jobs N`: cells side by side in lanes, each lane with its own servers
and each cell with its own workers, the same verdicts as one at a time, and nothing left
behind when the command dies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from graduate.evidence import EvidenceStore
from graduate.runs.record import RunRecord
from tests.conftest import CRASH_TIMING, processes_mentioning

# Its cells run side by side and compare verdicts with one at a time: a crash lane keeps
# other crash tests off the cores meanwhile.
pytestmark = [pytest.mark.slow, CRASH_TIMING]
FLOWS = Path(__file__).resolve().parents[1] / "flows"
MATRIX = ("matrix", "chaos", "--engines", "temporal,celery-chain",
          "--faults", "none,kill-worker", "--timeout", "30")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    (tmp_path / "spikes").mkdir()
    (tmp_path / "spikes" / "chaos.toml").write_text((FLOWS / "chaos.toml").read_text())
    return tmp_path


def test_cells_run_side_by_side_with_the_verdicts_of_one_at_a_time(project: Path) -> None:
    together = _matrix(project, "--jobs", "2", "--evidence", str(project / "together"))
    apart = _matrix(project, "--jobs", "1", "--evidence", str(project / "apart"))

    # Side by side: some two cells' runs were under way at the same moment, by their
    # own records (each from its start to its storing).
    runs = [_run(project / "together", cell) for cell in together.values()]
    overlapping = [(a, b) for a, b in combinations(runs, 2)
                   if _span(a)[0] < _span(b)[1] and _span(b)[0] < _span(a)[1]]
    assert overlapping, [_span(r) for r in runs]
    # Each on servers of its own: no two at once on one Temporal server or broker.
    for a, b in overlapping:
        assert _servers(a) != _servers(b)
    # The same verdicts, cell by cell.
    assert together.keys() == apart.keys()
    for key, cell in together.items():
        assert cell["status"] == apart[key]["status"] == "done", key
        assert _verdicts(cell) == _verdicts(apart[key]), key
    assert processes_mentioning(str(project)) == []


def test_interrupted_side_by_side_matrix_stops_every_cell_and_resumes(project: Path) -> None:
    command = [sys.executable, "-m", "graduate", *MATRIX, "--jobs", "2"]
    first = subprocess.Popen(command, cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _await_cells_side_by_side(project, first)
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=120)
    assert first.returncode != 0
    assert processes_mentioning(str(project)) == []
    store = EvidenceStore(project / ".graduate" / "evidence")
    matrix_id = store.latest_matrix()
    assert matrix_id is not None
    kept = {c.key: c.run_id for c in store.load_matrix(matrix_id).cells if c.status == "done"}

    second = subprocess.run([sys.executable, "-m", "graduate", "matrix", "--resume",
                             "--jobs", "2", "--json"], cwd=project, capture_output=True,
                            text=True, timeout=300, check=False)

    assert second.returncode == 0, second.stderr
    cells = {c["key"]: c for c in json.loads(second.stdout)["cells"]}
    assert len(cells) == 4
    assert all(c["status"] == "done" for c in cells.values())
    for key, run_id in kept.items():
        assert cells[key]["run_id"] == run_id, "a finished cell was run again"
    assert processes_mentioning(str(project)) == []


def test_killed_command_leaves_no_process_of_any_cell(project: Path) -> None:
    command = [sys.executable, "-m", "graduate", *MATRIX, "--jobs", "2"]
    cli = subprocess.Popen(command, cwd=project, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    _await_cells_side_by_side(project, cli)
    assert len(processes_mentioning(str(project))) > 2  # the cells, a server, workers

    cli.kill()
    cli.wait(timeout=10)

    # The parent-death signal is delivered as the command dies; the kernel then needs a
    # moment to take each process down.
    deadline = time.monotonic() + 30
    while processes_mentioning(str(project)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(project)) == []


def _matrix(project: Path, *more: str) -> dict[str, dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "graduate", *MATRIX, *more, "--json"],
                          cwd=project, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    return {c["key"]: c for c in json.loads(done.stdout)["cells"]}


def _run(evidence: Path, cell: dict[str, Any]) -> RunRecord:
    return EvidenceStore(evidence).load_run(cell["run_id"])


def _span(run: RunRecord) -> tuple[float, float]:
    """From the run's start to its storing, epoch seconds."""
    return run.started_at or 0.0, datetime.fromisoformat(run.created_at).timestamp()


def _servers(run: RunRecord) -> tuple[object, object]:
    services = run.environment.services
    return services["temporal"] and services["temporal"]["address"], services["broker_url"]


def _verdicts(cell: dict[str, Any]) -> tuple[object, ...]:
    """What a cell concluded: passed, and what became of the instances (a lost and a
    stuck instance are both unfinished: which of the two can hang on the moment the run
    ended)."""
    s = cell["summary"]
    return (s["passed"], s["completed"], s["compensated"], s["failed"],
            s["lost"] + s["stuck"], s["unabsorbed_duplicates"])


def _await_cells_side_by_side(project: Path, cli: subprocess.Popen[Any]) -> None:
    """Until two lanes run at once, a cell of one of them past its start (its server and
    workers run)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert cli.poll() is None, "the matrix ended before its cells ran side by side"
        mine = processes_mentioning(str(project))
        lanes = [p for p in mine if "graduate.chaos.cells" in p]
        if len(lanes) >= 2 and any("graduate.adapters" in p for p in mine):
            return
        time.sleep(0.1)
    raise AssertionError("two cells never ran at once")
