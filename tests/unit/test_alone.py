"""The `alone` mark (tests/alone.py): on several xdist workers, a test marked alone runs
before any other test starts, and no other test runs beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_no_test_runs_beside_an_alone_test(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    log = pytester.path / "log"
    pytester.makeconftest('pytest_plugins = ["tests.alone"]')
    # Collected before the alone test, as the unit tests are before the bench.
    pytester.makepyfile(test_a_others=f"""
        import time
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_other(n):
            with open({str(log)!r}, "a") as f:
                f.write(f"other {{time.time()}}\\n")
        """, test_b_measure=f"""
        import time
        import pytest

        @pytest.mark.alone
        def test_measures():
            with open({str(log)!r}, "a") as f:
                f.write(f"alone-start {{time.time()}}\\n")
            time.sleep(2)  # room for another worker's test to start beside it, if it could
            with open({str(log)!r}, "a") as f:
                f.write(f"alone-end {{time.time()}}\\n")
        """)
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-n", "3", "--dist", "loadgroup",
                                           "--no-loadscope-reorder", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=7)
    rows = [line.split() for line in log.read_text().splitlines()]
    ended = next(float(at) for what, at in rows if what == "alone-end")
    others = [float(at) for what, at in rows if what == "other"]
    assert len(others) == 6
    assert min(others) >= ended, "a test ran beside the alone test"


def test_without_an_alone_test_nothing_waits(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest('pytest_plugins = ["tests.alone"]')
    pytester.makepyfile("def test_one():\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup",
                                           "--no-loadscope-reorder", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
