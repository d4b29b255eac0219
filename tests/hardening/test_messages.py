"""No message names a service URL with its password: the reports' redaction applies."""

from __future__ import annotations

import subprocess
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import service_url
from tests.hardening.conftest import GRADUATE, environment, in_a_url


@pytest.mark.parametrize("form", ["user-info", "query"])
def test_signal_never_prints_the_ledger_password(project: Path, form: str) -> None:
    url = urllib.parse.urlsplit(service_url("GRADUATE_TEST_POSTGRES_URL", "PostgreSQL"))
    password = url.password or ""
    assert password, "the test needs a PostgreSQL URL with a password"
    host = f"{url.hostname}:{url.port or 5432}"
    ledger = (f"postgresql://{url.username}:{password}@{host}{url.path}" if form == "user-info"
              else f"postgresql://{url.username}@{host}{url.path}?password={password}")

    done = subprocess.run([*GRADUATE, "signal", "no-such-instance", "approval"], cwd=project,
                          env=environment(GRADUATE_LEDGER_URL=ledger), capture_output=True,
                          text=True, timeout=60, check=False)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "no instance 'no-such-instance' in the ledger" in done.stderr
    assert [s for s in in_a_url(password) if s in done.stdout + done.stderr] == []
    assert "***" in done.stderr
