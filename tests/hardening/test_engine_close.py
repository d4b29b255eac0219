"""A Temporal engine closed while SDK calls are still in flight: none of them answers
into a closed loop, and the process ends cleanly (issue 16: at a 5,000-instance run's
end such answers raised "Event loop is closed" in the SDK's threads by the thousand, and
once crashed the harness with a segfault there)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_answers_after_close_land_in_an_open_loop(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", str(HERE / "late_answers.py"), str(tmp_path),
         str(HERE.parent / "flows" / "approval.toml")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "server stopped" in done.stdout
    assert "exiting" in done.stdout
    assert "Event loop is closed" not in done.stderr, done.stderr[-3000:]
    assert "Fatal Python error" not in done.stderr
