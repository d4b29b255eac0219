"""correlation_breaks: effects whose correlation or trace ID is not their instance's."""

from __future__ import annotations

from graduate.check import CorrelationBreak, correlation_breaks
from tests.instrument.test_audit import TRACE, charge


def test_effects_that_carry_the_instance_ids_break_nothing() -> None:
    assert correlation_breaks("c-1", TRACE, [charge(), charge(id=8, step="confirm")]) == ()


def test_every_differing_id_of_every_effect_is_listed() -> None:
    other = "0" * 31 + "1"
    rows = [charge(), charge(id=8, attempt=3, trace_id=other),
            charge(id=9, step="confirm", instance_id="", correlation_id="", trace_id="")]

    assert correlation_breaks("c-1", TRACE, rows) == (
        CorrelationBreak(8, "charge", 3, "o-1", "trace_id", TRACE, other),
        CorrelationBreak(9, "confirm", 2, "", "correlation_id", "c-1", ""),
        CorrelationBreak(9, "confirm", 2, "", "trace_id", TRACE, ""),
    )
