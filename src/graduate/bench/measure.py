"""Figures from what landed when: the same arithmetic for graduate's runs (read from the
ledger) and for the plain baselines (read from their own table), so that a ratio
compares like with like."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """A figure over repeated runs: its median, and the lowest and highest seen."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), len(values))


@dataclass(frozen=True)
class FlowSample:
    """One run of N instances: flows per second from the first start to the last step's
    effect, the median time from one step's effect to the next (never across a wait, and
    never from the instance's start: see `sample`), and the median time across the waits
    (from the effect before a wait to the effect after it)."""

    instances: int
    flows_per_second: float
    step_p50: float
    wait_p50: float | None


def sample(nodes: Sequence[tuple[str, str]], started: Mapping[str, float],
           landed: Mapping[str, Mapping[str, float]]) -> FlowSample:
    """`landed[instance][step]`: when each step's (first) effect landed.

    A step's latency runs from the effect of the step before it: an instance's first
    step has none and is not counted. From a start to the first effect measures how the
    instances were started as much as what a step costs, and the two sides start them
    differently (the harness registers a batch and starts it together, each first step
    then queueing behind the batch's others; the plain driver starts one at a time).
    The starts still count in the throughput, from the first."""
    steps: list[float] = []
    waits: list[float] = []
    ends = []
    for instance, start in started.items():
        times = landed.get(instance, {})
        previous: float | None = None  # no step's effect yet: the first one is no interval
        across_wait = False
        for kind, name in nodes:
            if kind == "wait":
                across_wait = True
                continue
            at = times.get(name)
            if at is None:
                break
            if previous is not None:
                (waits if across_wait else steps).append(at - previous)
            previous, across_wait = at, False
        else:
            ends.append(previous or start)
    if not ends:
        raise ValueError("no instance finished: nothing to measure")
    span = max(ends) - min(started.values())
    return FlowSample(
        instances=len(started),
        flows_per_second=len(ends) / span if span > 0 else float("inf"),
        step_p50=statistics.median(steps) if steps else 0.0,
        wait_p50=statistics.median(waits) if waits else None,
    )
