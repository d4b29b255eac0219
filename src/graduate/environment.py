"""What a run ran on: host, Python, SDK and server versions. Recorded in every run's evidence."""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("graduate", "temporalio", "celery", "kombu", "redis", "psycopg")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def binary_version(binary: str) -> str | None:
    """The first line a server binary prints for --version (None if it cannot run)."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=20, check=False)
    except OSError:
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else None


def server_versions(temporal_cli: Path | None, redis_server: Path | None) -> dict[str, str | None]:
    """Versions of the local servers graduate started (None where it started none)."""
    versions: dict[str, str | None] = {"temporal_server": None, "redis_server": None}
    if temporal_cli is not None and (line := binary_version(str(temporal_cli))):
        match = re.search(r"Server ([\d.]+)", line)
        versions["temporal_server"] = match.group(1) if match else line
    if redis_server is not None and (line := binary_version(str(redis_server))):
        match = re.search(r"v=([\d.]+)", line)
        versions["redis_server"] = match.group(1) if match else line
    return versions


def host() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
