"""The HTML report in a real browser: headless Chromium renders it to a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from graduate.reports import build_report, write_reports
from tests.conftest import REQUIRE_SERVICES
from tests.reports.conftest import EvidenceBuilder

WIDTH, HEIGHT = 1280, 2000


def chromium() -> str:
    """The Chromium binary; skip without it, fail in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "Chromium is not installed: `apt-get install chromium` (`.ci/provision` does)"
    if REQUIRE_SERVICES:
        pytest.fail(f"GRADUATE_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def png_facts(data: bytes) -> tuple[int, int, int]:
    """Width, height, and how many different byte values the image data holds: a blank
    page compresses to a handful (its filter bytes and one colour), a rendered one to
    hundreds."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    position, width, height, image = 8, 0, 0, b""
    while position < len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
        elif kind == b"IDAT":
            image += body
        position += 12 + length
    return width, height, len(set(zlib.decompress(image)))


def test_chromium_renders_the_report(builder: EvidenceBuilder, full_matrix: str,
                                     tmp_path: Path) -> None:
    browser = chromium()
    page = write_reports(build_report(builder.store), tmp_path / "out", ("html",))[0]
    shot = tmp_path / "report.png"

    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 50_000, "the screenshot is too small to hold the report"
    width, height, values = png_facts(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert values > 64, f"the screenshot looks blank ({values} distinct byte values)"


@pytest.mark.parametrize(("required", "outcome"), [(False, pytest.skip.Exception),
                                                   (True, pytest.fail.Exception)])
def test_without_chromium_the_test_skips_but_fails_in_ci(
        monkeypatch: pytest.MonkeyPatch, required: bool, outcome: type[BaseException]) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(f"{__name__}.REQUIRE_SERVICES", required)

    with pytest.raises(outcome, match="apt-get install chromium"):
        chromium()
