"""One process at a time runs a matrix: a second `graduate matrix` on it exits 2 and
names the process that holds it; the lock goes with that process, however it ends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graduate.chaos.matrix_lock import matrix_lock
from graduate.errors import InUse
from graduate.evidence import EvidenceStore
from tests.conftest import processes_mentioning

FLOWS = Path(__file__).resolve().parents[1] / "flows"
# A process that holds matrix m1 of the evidence folder given as its argument until its
# standard input closes.
HOLDER = """
import sys
from pathlib import Path
from graduate.chaos.matrix_lock import matrix_lock
from graduate.evidence import EvidenceStore
with matrix_lock(EvidenceStore(Path(sys.argv[1])), "m1"):
    print("held", flush=True)
    sys.stdin.read()
"""


def graduate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graduate", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def hold(evidence: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(evidence)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n"
    return holder


def test_a_matrix_held_by_a_process_is_refused_until_that_process_dies(
        tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    holder = hold(evidence)

    refused = graduate("matrix", "--resume", "--matrix-id", "m1", "--evidence",
                       str(evidence), cwd=tmp_path)

    assert refused.returncode == 2, refused.stderr
    said = " ".join((refused.stdout + refused.stderr).split())
    assert f"matrix m1 is being run by another process (pid {holder.pid})" in said
    assert "Traceback" not in said
    holder.send_signal(signal.SIGKILL)  # no clean-up: the kernel lets go of the lock
    holder.wait(timeout=30)
    assert (evidence / "matrices" / "m1.lock").exists()
    with matrix_lock(EvidenceStore(evidence), "m1"):
        pass
    assert not (evidence / "matrices" / "m1.lock").exists()


def test_a_process_that_lets_go_hands_the_matrix_to_the_next(tmp_path: Path) -> None:
    evidence = tmp_path / "evidence"
    holder = hold(evidence)
    with (pytest.raises(InUse, match=f"pid {holder.pid}"),
          matrix_lock(EvidenceStore(evidence), "m1")):
        pass

    holder.communicate("", timeout=30)

    assert holder.returncode == 0
    with matrix_lock(EvidenceStore(evidence), "m1"):
        assert (evidence / "matrices" / "m1.lock").read_text().strip() != str(holder.pid)


@pytest.mark.slow
def test_a_resume_beside_a_running_matrix_runs_none_of_its_cells(tmp_path: Path) -> None:
    """Two real `graduate matrix` processes: the second, a resume of the matrix the first
    is running, exits 2 before any cell; the first runs each cell once; once it ended,
    a resume finds the matrix free (and nothing left to run)."""
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    (tmp_path / "spikes").mkdir()
    (tmp_path / "spikes" / "chaos.toml").write_text((FLOWS / "chaos.toml").read_text())
    store = EvidenceStore(tmp_path / ".graduate" / "evidence")
    first = subprocess.Popen([sys.executable, "-m", "graduate", "matrix", "chaos",
                              "--engines", "celery-chain", "--faults", "none",
                              "--instances", "1", "--timeout", "60", "--json"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 60
        while store.latest_matrix() is None:  # saved once, before its first cell
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the matrix was not saved in time"
            time.sleep(0.05)
        matrix_id = store.latest_matrix()

        second = graduate("matrix", "--resume", cwd=tmp_path)
        still_running = first.poll() is None

        out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert still_running, "the first matrix ended before the resume was refused"
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"matrix {matrix_id} is being run by another process (pid {first.pid})" in " ".join(
        (second.stdout + second.stderr).split())
    assert first.returncode == 0, err
    [cell] = json.loads(out)["cells"]
    assert cell["status"] == "done"
    assert store.runs() == [cell["run_id"]], "a cell ran twice"

    third = graduate("matrix", "--resume", "--json", cwd=tmp_path)

    assert third.returncode == 0, third.stderr
    assert store.runs() == [cell["run_id"]]
    assert processes_mentioning(str(tmp_path)) == []
