"""The matrix from the command line: Ctrl-C keeps finished cells, --resume runs the rest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graduate.evidence import EvidenceStore
from tests.conftest import processes_mentioning

pytestmark = pytest.mark.slow
FLOWS = Path(__file__).resolve().parents[1] / "flows"


def test_interrupted_matrix_resumes_without_rerunning_finished_cells(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    (tmp_path / "spikes").mkdir()
    (tmp_path / "spikes" / "chaos.toml").write_text((FLOWS / "chaos.toml").read_text())
    command = [sys.executable, "-m", "graduate", "matrix", "chaos", "--engines", "temporal",
               "--faults", "none,kill-worker,wait-timeout", "--timeout", "30"]
    store = EvidenceStore(tmp_path / ".graduate" / "evidence")

    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _done_cells(store):
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    finished = _done_cells(store)
    assert finished, "no cell finished in time"
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert first.returncode != 0
    assert processes_mentioning(str(tmp_path)) == []
    kept = {key: run for key, run in _done_cells(store).items()}

    second = subprocess.run([sys.executable, "-m", "graduate", "matrix", "--resume",
                             "--json"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False)

    assert second.returncode == 0, second.stderr
    record = json.loads(second.stdout)
    cells = {c["key"]: c for c in record["cells"]}
    assert len(cells) == 3
    assert all(c["status"] == "done" for c in cells.values())
    for key, run_id in kept.items():
        assert cells[key]["run_id"] == run_id, "a finished cell was run again"
    assert sorted(store.runs()) == sorted(c["run_id"] for c in cells.values())
    assert processes_mentioning(str(tmp_path)) == []


def _done_cells(store: EvidenceStore) -> dict[str, str]:
    matrix = store.latest_matrix()
    if matrix is None:
        return {}
    try:
        cells = store.load_matrix(matrix).cells
    except Exception:
        return {}
    return {c.key: str(c.run_id) for c in cells if c.status == "done"}
