"""Shared by the scaffold tests: write a flow's package, and run tools inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from graduate.flow import Flow, Wait, load_flow
from graduate.instrument import FLOW_VARIABLE, LEDGER_URL_VARIABLE, RUN_ID_VARIABLE

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def scaffoldable_pmi() -> Flow:
    """The pmi_milestones spike as the scaffold writes it today: its parallel groups and
    its waits, without the sign-offs' escalations and the board's interrupt, which the
    scaffold refuses, saying so (tests/scaffold/test_generate.py)."""
    flow = load_flow(ROOT / "spikes" / "pmi_milestones.toml")
    nodes = tuple(replace(node, escalation=None) if isinstance(node, Wait) else node
                  for node in flow.nodes)
    return replace(flow, nodes=nodes, interrupt=None)


def tool(folder: Path, argv: Sequence[str], *, timeout: float,
         environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's tools in the generated package's folder, as its team would,
    with none of this test run's own graduate run variables (and with `environ`)."""
    environ = {**{key: value for key, value in os.environ.items()
                  if key not in (LEDGER_URL_VARIABLE, RUN_ID_VARIABLE, FLOW_VARIABLE)},
               **(environ or {})}
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=folder, env=environ,
                          capture_output=True, text=True, timeout=timeout, check=False)
