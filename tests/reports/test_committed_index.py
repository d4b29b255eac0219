"""reports/index.md is generated, never typed: it must be what `graduate report --index`
writes from the ADRs and the evidence committed beside it."""

from __future__ import annotations

from pathlib import Path

from graduate.adr import load_policy
from graduate.reports.index import INDEX_NAME, build_index, render_index

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_index_is_what_the_committed_adrs_and_evidence_say() -> None:
    reports = REPO / "reports"

    written = render_index(build_index(REPO, load_policy(REPO), reports))

    assert (reports / INDEX_NAME).read_text(encoding="utf-8") == written, (
        "reports/index.md is out of date with docs/adr and the evidence they pin: write it "
        "again with `graduate report --index --out reports` and commit it")
