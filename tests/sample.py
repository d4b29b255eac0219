"""The sample flow `partner_approval` was before it became the Dealix pilot
(create_record, request_approval, the approval wait, activate, notify), kept for the tests
that exercise the harness's mechanics on it: their assertions name its steps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FLOW = REPO / "tests" / "flows" / "partner_approval_sample.toml"


def copy_sample_spikes(dest: Path, *, dirs_exist_ok: bool = False) -> Path:
    """The repository's spikes folder copied to `dest`, with the sample flow as
    `partner_approval`; returns `dest`."""
    shutil.copytree(REPO / "spikes", dest, dirs_exist_ok=dirs_exist_ok)
    shutil.copy(SAMPLE_FLOW, dest / "partner_approval.toml")
    return dest


# The demo matrix run on the sample flow, committed in reports/evidence and pinned by
# ADR 0003's history, beside the pilot's evidence that replaced it.
SAMPLE_MATRIX = REPO / "reports" / "evidence" / "matrices" / "mf016b1.json"


def sample_run_files() -> list[Path]:
    """The run files of the sample's demo matrix, sorted."""
    cells = json.loads(SAMPLE_MATRIX.read_text(encoding="utf-8"))["cells"]
    runs = SAMPLE_MATRIX.parents[1] / "runs"
    return sorted(runs / f"{cell['run_id']}.json" for cell in cells)
