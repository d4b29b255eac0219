"""The quality bar holds on every change: ruff and mypy strict are clean on graduate's
own code, its tests, benchmarks and examples (pyproject says which files), as CI checks.
A merge once left eight mypy errors on main that no test saw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=280, check=False,
                          env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)})


def test_ruff_is_clean(tmp_path: Path) -> None:
    result = _tool("ruff", "check", "--no-cache", ".", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    result = _tool("mypy", "--cache-dir", str(tmp_path / "mypy"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
