"""Shared by the scaffold tests: write a flow's package, and run tools inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from graduate.instrument import FLOW_VARIABLE, LEDGER_URL_VARIABLE, RUN_ID_VARIABLE

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def tool(folder: Path, argv: Sequence[str], *, timeout: float,
         environ: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's tools in the generated package's folder, as its team would,
    with none of this test run's own graduate run variables (and with `environ`)."""
    environ = {**{key: value for key, value in os.environ.items()
                  if key not in (LEDGER_URL_VARIABLE, RUN_ID_VARIABLE, FLOW_VARIABLE)},
               **(environ or {})}
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=folder, env=environ,
                          capture_output=True, text=True, timeout=timeout, check=False)
