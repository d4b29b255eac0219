"""Time scale: a weeks-long flow, run in minutes, with its durations still real on paper.

A flow keeps its real durations (a 72-hour approval deadline, a 90-second step). A run
may compress them all by one factor, written as the user reads it: `--time-scale 1h=1s`
(an hour of the flow lasts a second of the run) or `--time-scale 3600`. Every duration
of the flow is divided by the factor: step work, step timeouts, retry intervals, wait
deadlines and escalations, and timers; the engines derive theirs from these (a chain's
countdown from the wait's deadline, Celery's time limits and the state machine's leases
from the step's timeout, Temporal's timers and start-to-close timeouts from both).

Two things are not scaled, on purpose, and the evidence says so:
- The engines' own recovery settings (the Redis visibility timeout and its restore
  sweep, Temporal's heartbeat timeout and graceful shutdown, the state machine's tick
  and lease margin). They are what an outage really costs; scaling them silently would
  make a run look faster to recover than production is. A profile sets them, in real
  seconds.
- The harness's own times (`--timeout`, `--restart-delay`, `--partition-for`,
  `--wait-deadline`), which are the operator's and the machine's, in real seconds.

A scaled duration never goes below the floor its kind needs for the engines and the
harness to do their part (a step timeout must outlast a pause at a fault point and a
worker restart; a wait must last long enough to be answered). A duration raised to its
floor, or left as it was because it was already below it, is recorded as floored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from graduate.errors import ConfigError, FlowError
from graduate.flow import (
    MAX_SECONDS,
    Flow,
    Node,
    Parallel,
    RetryPolicy,
    Step,
    Timer,
    Wait,
    parse_duration,
    validate,
    write_flow_json,
)

# The shortest a scaled duration of each kind may be. A step timeout covers a pause at
# a fault point and a restarted worker; a wait must be seen waiting and answered (the
# harness polls every 0.1 s); a retry interval below 0.1 s is a busy loop. Work and
# timers may be as short as the factor makes them: nothing waits on them in time.
FLOORS: dict[str, float] = {
    "timeout": 10.0,
    "deadline": 5.0,
    "retry.initial_interval": 0.1,
    "retry.maximum_interval": 0.1,
    "work": 0.0,
    "duration": 0.0,
}
# What the evidence says of the engines' own settings under a time scale.
ENGINE_SETTINGS_NOT_SCALED = (
    "not scaled: engine recovery delays (Redis visibility timeout and restore sweep, "
    "Temporal heartbeat timeout and graceful shutdown, state-machine tick and lease "
    "margin) are real seconds, as in production"
)
_RATIO = re.compile(r"^\s*([^=]+?)\s*=\s*([^=]+?)\s*$")


@dataclass(frozen=True)
class ScaledDuration:
    """One duration of the flow under the time scale."""

    item: str  # "step activate", "wait approval", "timer cool_off"
    name: str  # "timeout", "deadline", "work", "retry.initial_interval", "duration"
    real: float  # seconds, as the flow defines it
    scaled: float  # seconds, as the run used it
    floored: bool = False  # kept at its kind's floor rather than divided (see FLOORS)


@dataclass(frozen=True)
class TimeScaleRecord:
    """The time scale of a run, as its evidence keeps it."""

    label: str  # as given: "1h=1s", "3600"
    factor: float
    durations: tuple[ScaledDuration, ...]
    engine_settings: str = ENGINE_SETTINGS_NOT_SCALED

    def describe(self) -> str:
        """One line for a report: "1h=1s (x3600): 12 durations scaled, 3 floored"."""
        floored = sum(1 for d in self.durations if d.floored)
        return (f"{self.label} (x{self.factor:g}): {len(self.durations)} flow durations "
                f"divided by {self.factor:g}, {floored} kept at their floor; engine "
                "settings not scaled")

    def unscaled(self, flow: Flow) -> Flow:
        """`flow` as a run under this scale ran it, with every duration the scale
        changed back at its real value: the flow as it was written. A floor cannot be
        divided back, so the record's own real values are put back, item by item."""
        real = {(d.item, d.name): d.real for d in self.durations}

        def back(item: str, name: str, value: float) -> float:
            return real.get((item, name), value)

        def step_back(step: Step) -> Step:
            at = f"step {step.name}"
            return replace(step, work=back(at, "work", step.work),
                           timeout=back(at, "timeout", step.timeout),
                           retry=replace(step.retry, initial_interval=back(
                               at, "retry.initial_interval", step.retry.initial_interval),
                               maximum_interval=back(at, "retry.maximum_interval",
                                                     step.retry.maximum_interval)))

        def wait_back(wait: Wait) -> Wait:
            at = f"wait {wait.name}"
            escalation = wait.escalation and replace(
                wait.escalation, after=back(at, "escalation.after", wait.escalation.after))
            return replace(wait, deadline=back(at, "deadline", wait.deadline),
                           escalation=escalation)

        return replace(flow, nodes=_each_node(
            flow, step_back, wait_back,
            lambda timer: back(f"timer {timer.name}", "duration", timer.duration)))


@dataclass(frozen=True)
class TimeScale:
    """How many seconds of the flow pass in one second of the run."""

    factor: float = 1.0
    label: str = "1"

    @classmethod
    def parse(cls, value: str | float | TimeScale) -> TimeScale:
        """`"1h=1s"` (flow time = run time), `"3600"` or `3600` (a factor); 1 is real time."""
        if isinstance(value, TimeScale):
            return value
        if isinstance(value, bool):
            raise _bad(value)
        if isinstance(value, int | float):
            factor, label = float(value), f"{value:g}"
        elif isinstance(value, str) and (match := _RATIO.match(value)):
            try:
                flow_time = parse_duration(match.group(1), "--time-scale")
                run_time = parse_duration(match.group(2), "--time-scale")
            except FlowError as error:
                raise _bad(value) from error
            if run_time <= 0:
                raise _bad(value)
            factor, label = flow_time / run_time, value.strip().replace(" ", "")
        elif isinstance(value, str):
            try:
                factor = float(value)
            except ValueError as error:
                raise _bad(value) from error
            label = value.strip()
        else:
            raise _bad(value)
        if not math.isfinite(factor) or factor < 1 or factor > MAX_SECONDS:
            raise _bad(value)
        return cls(factor=factor, label=label)

    @property
    def real_time(self) -> bool:
        return self.factor == 1.0

    def seconds(self, real: float, kind: str) -> tuple[float, bool]:
        """`real` seconds of the flow under the scale, and whether its floor kept it."""
        floor = FLOORS[kind]
        scaled = real / self.factor
        if scaled >= floor or self.real_time:
            return scaled, False
        return min(real, floor), True

    def apply(self, flow: Flow) -> tuple[Flow, TimeScaleRecord]:
        """`flow` with every duration scaled, and the record of what changed. Refused
        when the scale would make a step that outlasts its timeout fit in it."""
        durations: list[ScaledDuration] = []

        def scale(item: str, name: str, real: float) -> float:
            scaled, floored = self.seconds(real, name)
            durations.append(ScaledDuration(item, name, real, scaled, floored))
            return scaled

        def scale_step(step: Step) -> Step:
            at = f"step {step.name}"
            work = scale(at, "work", step.work) if step.work else 0.0
            timeout = scale(at, "timeout", step.timeout)
            if step.work >= step.timeout and work < timeout:
                raise ConfigError(
                    f"--time-scale {self.label}: step {step.name} of {flow.name} works "
                    f"{step.work:g}s, past its {step.timeout:g}s timeout, but scaled its "
                    f"timeout stays at the {FLOORS['timeout']:g}s floor and its work "
                    f"({work:g}s) would fit in it; give a smaller factor (at most "
                    f"{step.work / FLOORS['timeout']:g})")
            retry = step.retry
            return replace(step, work=work, timeout=timeout, retry=RetryPolicy(
                max_attempts=retry.max_attempts,
                initial_interval=scale(at, "retry.initial_interval", retry.initial_interval),
                backoff_coefficient=retry.backoff_coefficient,
                maximum_interval=scale(at, "retry.maximum_interval", retry.maximum_interval)))

        def scale_wait(wait: Wait) -> Wait:
            deadline = scale(f"wait {wait.name}", "deadline", wait.deadline)
            deadline_floored = durations[-1].floored  # the record scale() just made
            scaled = wait.with_deadline(deadline)
            # The escalation is divided by the factor like the deadline, and moved with
            # it when the deadline is kept at its floor, so it still comes before it.
            if wait.escalation is not None and scaled.escalation is not None:
                durations.append(ScaledDuration(
                    f"wait {wait.name}", "escalation.after", wait.escalation.after,
                    scaled.escalation.after, floored=deadline_floored))
            return scaled

        nodes = _each_node(flow, scale_step, scale_wait, lambda timer: scale(
            f"timer {timer.name}", "duration", timer.duration))
        record = TimeScaleRecord(label=self.label, factor=self.factor,
                                 durations=tuple(durations))
        return validate(replace(flow, nodes=nodes)), record


def _each_node(flow: Flow, step: Callable[[Step], Step], wait: Callable[[Wait], Wait],
               timer: Callable[[Timer], float]) -> tuple[Node, ...]:
    """The flow's nodes with `step` applied to each step (in parallel branches too),
    `wait` to each wait, and each timer lasting `timer(timer)`, in the order written."""
    nodes: list[Node] = []
    for node in flow.nodes:
        if isinstance(node, Step):
            nodes.append(step(node))
        elif isinstance(node, Parallel):
            nodes.append(replace(node, branches=tuple(
                replace(branch, steps=tuple(step(s) for s in branch.steps))
                for branch in node.branches)))
        elif isinstance(node, Wait):
            nodes.append(wait(node))
        else:
            nodes.append(replace(node, duration=timer(node)))
    return tuple(nodes)


def scaled_flow(flow: Flow, scale: TimeScale, folder: Path) -> tuple[Flow, TimeScaleRecord | None]:
    """`flow` under `scale`, written to `folder` for the workers (which load a flow from
    its file); `flow` itself, and no record, in real time."""
    if scale.real_time:
        return flow, None
    scaled, record = scale.apply(flow)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", scale.label)
    return write_flow_json(scaled, folder / f"{flow.name}-time-{name}.json"), record


def _bad(value: object) -> ConfigError:
    return ConfigError(
        f"--time-scale {value!r} is not understood: write FLOW_TIME=RUN_TIME, for example "
        "1h=1s (an hour of the flow in a second of the run) or 1d=1m, or a factor of 1 or "
        f"more such as 3600 (at most {MAX_SECONDS:g})")
