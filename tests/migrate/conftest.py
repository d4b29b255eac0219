"""Shared by the inventory tests: the fixture codebases and a helper to write small ones."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ACME = FIXTURES / "acme"
CELERY_EXAMPLES = FIXTURES / "celery_examples"

Codebase = Callable[[dict[str, str]], Path]


@pytest.fixture
def codebase(tmp_path: Path) -> Codebase:
    """Write a small codebase: `codebase({"app/tasks.py": "...source..."})`."""

    def write(files: dict[str, str]) -> Path:
        for name, source in files.items():
            path = tmp_path / "code" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return tmp_path / "code"

    return write
