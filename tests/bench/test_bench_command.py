"""`graduate bench` as a user runs it, on a tiny size: the scale section's rows, plots
and report, each row matching the evidence of its run. (Not a measurement: the sizes are
too small to mean anything; the figures' arithmetic is in tests/unit/test_bench.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graduate.evidence import EvidenceStore
from tests.conftest import processes_mentioning

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_scale_section_writes_its_rows_plots_and_report(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    shutil.copytree(REPO / "spikes", tmp_path / "spikes")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}

    # A row is written whether or not its run finished before the deadline, and the
    # test asserts that each row says what its run's evidence says, not that it finished.
    # The 2-instance run may leave an instance waiting for good (its approval signal sent
    # as the broker is killed): a 60 s deadline, not 120, then ends it sooner; the
    # 1-instance run needs about 25 s in CI (the state machine's lease after the kill).
    done = subprocess.run(
        [sys.executable, "-m", "graduate", "bench", "--sections", "scale", "--scale", "1,2",
         "--scale-steps", "3", "--scale-engines", "celery-state-machine", "--timeout", "60",
         "--scale-per-instance", "0", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=600, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert processes_mentioning(str(tmp_path)) == []
    rows = json.loads((out / "benchmarks.json").read_text())["scale"]
    assert [(r["engine"], r["instances"], r["steps"]) for r in rows] == [
        ("celery-state-machine", 1, 3), ("celery-state-machine", 2, 3)]
    logged = [json.loads(line) for line in
              (tmp_path / ".graduate" / "bench" / "scale-rows.jsonl").read_text().splitlines()]
    assert logged == rows
    store = EvidenceStore(tmp_path / ".graduate" / "bench" / "evidence")
    for row in rows:
        assert row["fired"], row
        record = store.load_run(row["run_id"])
        assert (record.fault.fault, record.fault.options["restart"]) == ("kill-worker", True)
        kinds = [e.kind for e in record.timeline]
        assert "service-restarted" in kinds
        assert "worker-started" in kinds
        counts = {v: sum(1 for i in record.instances if i.verdict.verdict.value == v)
                  for v in ("completed", "lost", "stuck", "failed")}
        assert {k: row[k] for k in counts} == counts
        assert 0 < row["harness_peak_mb"] < 300
    markdown = (out / "benchmarks.md").read_text()
    assert "| celery-state-machine | 2 | 3 | yes |" in markdown
    for figure in ("time", "memory", "lost", "duplicated"):
        assert (out / "benchmarks" / f"scale-{figure}-by-instances.svg").exists()
        assert f"benchmarks/scale-{figure}-by-instances.svg" in markdown
