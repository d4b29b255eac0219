"""Shared by the inventory tests: the fixture codebases, Celery's own examples taken from
its source distribution at test time, and a helper to write small codebases."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import unavailable

FIXTURES = Path(__file__).parent / "fixtures"
ACME = FIXTURES / "acme"

# Code from a public repository is never committed here: Celery's examples are read from
# its release on PyPI, pinned by version and by the digest PyPI publishes for the file.
CELERY_RELEASE = "celery==5.7.0"
CELERY_SDIST = "celery-5.7.0.tar.gz"
CELERY_SDIST_SHA256 = "6a5dfcf6662287204f009a02002b9e66c83d4105e47ebabdc7079108772fc6f0"
CELERY_EXAMPLE_FOLDERS = ("django", "next-steps", "periodic-tasks")
# Git-ignored (.graduate/), so the download survives between sessions and is never committed.
TEST_CACHE = Path(__file__).parents[2] / ".graduate" / "test-cache"
PIP_SECONDS = 300

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


def celery_sdist(cache: Path) -> Path:
    """Celery's source distribution, downloaded from the package index into `cache` once;
    skip when it cannot be had (fail in CI)."""
    sdist = cache / CELERY_SDIST
    if not sdist.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        # Downloaded aside and moved in whole: a session killed mid-download, or another
        # one downloading too, never leaves a partial file under the final name.
        with tempfile.TemporaryDirectory(dir=cache) as aside:
            command = [sys.executable, "-m", "pip", "download", "--no-deps",
                       "--no-binary", ":all:", CELERY_RELEASE, "-d", aside]
            try:
                done = subprocess.run(command, capture_output=True, text=True,
                                      timeout=PIP_SECONDS, check=False)
            except subprocess.TimeoutExpired:
                unavailable(f"`pip download {CELERY_RELEASE}` took over {PIP_SECONDS} s")
            if done.returncode != 0 or not (Path(aside) / CELERY_SDIST).is_file():
                reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
                unavailable(f"`pip download {CELERY_RELEASE}` failed: "
                            f"{reason[0] if reason else f'exit {done.returncode}'}")
            os.replace(Path(aside) / CELERY_SDIST, sdist)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != CELERY_SDIST_SHA256:
        pytest.fail(f"{sdist} is not the file PyPI publishes (sha256 {digest}, expected "
                    f"{CELERY_SDIST_SHA256}): delete it and run again")
    return sdist


def extract_examples(sdist: Path, into: Path) -> Path:
    """Only `examples/<folder>` for each of CELERY_EXAMPLE_FOLDERS, as the folder `into`,
    with Celery's licence (BSD 3-Clause) beside them as `examples/LICENSE`: the excerpt
    travels with its licence and its copyright notice."""
    release = CELERY_SDIST.removesuffix(".tar.gz")
    prefixes = tuple(f"{release}/examples/{folder}/" for folder in CELERY_EXAMPLE_FOLDERS)
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefixes)]
        archive.extractall(into, members=members, filter="data")
        licence = archive.extractfile(f"{release}/LICENSE")
        assert licence is not None, f"{sdist} holds no LICENSE"
        (into / release / "examples" / "LICENSE").write_bytes(licence.read())
    return into / release / "examples"


@pytest.fixture(scope="session")
def celery_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Celery 5.7.0's `examples/` folders django, next-steps and periodic-tasks, unpacked
    from its source distribution (downloaded once, then read from TEST_CACHE)."""
    return extract_examples(celery_sdist(TEST_CACHE), tmp_path_factory.mktemp("celery"))
