"""`ChaosOutcome.assert_ok`: which failures a test may tolerate, and which never."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from graduate.check import EffectVerdict, Verdict, duplicate_failure
from graduate.flow import load_flow
from graduate.testing.outcome import ChaosOutcome

DD_ROOM = Path(__file__).resolve().parents[2] / "spikes" / "dd_room.toml"


def _outcome(doubled: list[str], other_failures: tuple[str, ...] = ()) -> ChaosOutcome:
    """An outcome of one dd_room instance whose `doubled` steps each landed twice."""
    effects = [EffectVerdict(step=step, kind="effect", calls=2, applied=2, absorbed=0,
                             errors=0) for step in doubled]
    item = SimpleNamespace(instance_id="dd_room-abc123-01", correlation_id="c-1",
                           trace_id="t-1", verdict=Verdict.COMPLETED, reason="finished",
                           resume=None, starts=None, rollback=None, effects=effects)
    failures = tuple(duplicate_failure(cast(Any, item), e) for e in effects)
    result = SimpleNamespace(
        flow="dd_room", engine="temporal", profile="defaults", run_id="abc123",
        plan=SimpleNamespace(describe=lambda: "kill-worker at track_requests"),
        evidence=None, instances=(item,),
        verdict=SimpleNamespace(failures=failures + other_failures))
    return ChaosOutcome(cast(Any, result), load_flow(DD_ROOM))


def test_a_tolerated_steps_duplicate_passes_for_each_of_its_items() -> None:
    _outcome(["grant_access[acme]", "grant_access[bidco]"]).assert_ok(
        tolerate_duplicates_of={"grant_access"})


def test_another_steps_duplicate_still_fails() -> None:
    outcome = _outcome(["grant_access[acme]", "track_requests"])

    with pytest.raises(AssertionError, match="did not survive"):
        outcome.assert_ok(tolerate_duplicates_of={"grant_access"})


def test_any_other_failure_still_fails() -> None:
    outcome = _outcome(["grant_access[acme]"], ("dd_room-abc123-01 lost: nothing holds it",))

    with pytest.raises(AssertionError, match="did not survive"):
        outcome.assert_ok(tolerate_duplicates_of={"grant_access"})


def test_without_tolerance_a_duplicate_fails() -> None:
    with pytest.raises(AssertionError, match="did not survive"):
        _outcome(["grant_access[acme]"]).assert_ok()


def test_a_step_the_flow_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no step grant_acces"):
        _outcome([]).assert_ok(tolerate_duplicates_of={"grant_acces"})
