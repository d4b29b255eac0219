"""Properties of the flow loader and the duration parser, over inputs nobody would write
by hand: whatever comes in, the answer is a sound flow (or duration) or a FlowError that
says what is wrong, never another exception."""

from __future__ import annotations

import math
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graduate.errors import FlowError
from graduate.flow import (
    MAX_ATTEMPTS,
    MAX_SECONDS,
    Flow,
    Step,
    Timer,
    Wait,
    flow_from_dict,
    flow_to_dict,
    load_flow,
    parse_duration,
    validate,
)
from tests.adr.conftest import REPO

SPIKE = REPO / "spikes" / "partner_approval.toml"
BASE = flow_to_dict(load_flow(SPIKE))
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300)
           | st.floats() | st.text(max_size=12)
           | st.sampled_from(["30s", "0s", "-1s", "1e309", "nan", "99999999d", "1.5h", ""]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def leaf_paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in the flow's dict a value can be replaced: tables and leaves."""
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += leaf_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += leaf_paths(value, (*prefix, index))
    return found


PATHS = leaf_paths(BASE)


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = deepcopy(data)
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def assert_sound(flow: Flow) -> None:
    """What every engine relies on: real, bounded numbers everywhere."""
    for node in flow.nodes:
        if isinstance(node, Step):
            assert math.isfinite(node.timeout)
            assert 0 < node.timeout <= MAX_SECONDS
            retry = node.retry
            assert 1 <= retry.max_attempts <= MAX_ATTEMPTS
            for seconds in (retry.initial_interval, retry.maximum_interval):
                assert math.isfinite(seconds)
                assert 0 < seconds <= MAX_SECONDS
            assert math.isfinite(retry.backoff_coefficient)
            assert retry.backoff_coefficient >= 1
        elif isinstance(node, Wait):
            assert math.isfinite(node.deadline)
            assert 0 < node.deadline <= MAX_SECONDS
        elif isinstance(node, Timer):
            assert math.isfinite(node.duration)
            assert 0 <= node.duration <= MAX_SECONDS


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_a_duration_is_a_usable_number_or_a_flow_error(value: Any) -> None:
    try:
        seconds = parse_duration(value, "timeout")
    except FlowError:
        return
    assert isinstance(seconds, float)
    assert not math.isnan(seconds)
    assert seconds <= MAX_SECONDS


@given(number=st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False,
                          allow_infinity=False),
       unit=st.sampled_from(sorted(UNITS)), spaces=st.sampled_from(["", " "]))
def test_a_written_duration_means_its_number_times_its_unit(number: Any, unit: str,
                                                            spaces: str) -> None:
    text = f"{number:f}{spaces}{unit}"
    expected = float(f"{number:f}") * UNITS[unit]
    if expected > MAX_SECONDS:
        with pytest.raises(FlowError, match="at most 366d"):
            parse_duration(text, "deadline")
    else:
        assert parse_duration(text, "deadline") == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=3))
def test_a_changed_flow_loads_sound_or_fails_with_a_flow_error(
        changes: list[tuple[tuple[Any, ...], Any]]) -> None:
    data: Any = BASE
    for path, value in changes:
        try:
            data = replaced(data, path, value)
        except (TypeError, KeyError, IndexError):
            continue  # an earlier change replaced the table this path goes through
    try:
        flow = validate(flow_from_dict(data, origin="fuzzed"))
    except FlowError:
        return
    assert_sound(flow)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300)
       | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))
       | st.sampled_from([SPIKE.read_bytes()[:cut] for cut in range(0, 1900, 97)]))
def test_any_file_loads_as_a_sound_flow_or_fails_with_a_flow_error(
        tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fuzzed.toml"
    path.write_bytes(content)
    try:
        flow = load_flow(path)
    except FlowError:
        return
    assert_sound(flow)
