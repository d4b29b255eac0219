"""Geometry of the HTML report's inline charts, as plain shapes.

This module only places shapes; the template writes them out, so every label that
came from evidence is escaped in one place (the template) like any other text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from graduate.reports.model import FlowInfo, InstanceReport, ResumeStats, RunReport
from graduate.reports.units import seconds

WIDTH = 960.0
GUTTER = 200.0  # lane labels on the left
PAD = 24.0
LANE = 24.0
MARK_ROW = 18.0
AXIS = 30.0
MIN_MARK = 4.0  # an effect takes milliseconds: still draw it visibly


@dataclass(frozen=True)
class Shape:
    kind: Literal["rect", "line", "text", "circle"]
    cls: str
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0  # rect
    height: float = 0.0  # rect
    x2: float = 0.0  # line
    y2: float = 0.0  # line
    r: float = 0.0  # circle
    text: str = ""  # text content
    title: str = ""  # a tooltip
    anchor: str = "start"


@dataclass(frozen=True)
class Svg:
    width: float
    height: float
    label: str
    shapes: tuple[Shape, ...] = field(default_factory=tuple)


def _ticks(end: float, count: int = 8) -> list[float]:
    """Round tick positions from 0 to `end`."""
    raw = end / count
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(end / step) + 1)]


def _tick(value: float) -> str:
    return f"{value:.4g} s"


def timeline(run: RunReport, instance: InstanceReport, flow: FlowInfo) -> Svg:
    """One instance's run: a lane per step (and per compensation that ran), each ledger
    call as a mark at its time, the harness's acts as numbered vertical lines, and the
    gap from the fault to the first effect after it."""
    lanes = _lanes(instance, flow)
    plot = WIDTH - GUTTER - PAD
    end = max(run.span, 1.0) * 1.03

    def x(moment: float) -> float:
        return GUTTER + max(0.0, min(moment, end)) / end * plot

    shapes: list[Shape] = []
    # Event markers: staggered rows, so that acts a few milliseconds apart stay readable.
    rows_end: list[float] = []
    placed: list[tuple[float, int]] = []
    events = [e for e in run.events if e.concerns(instance.instance_id)]
    for event in events:
        ex = x(event.at)
        level = next((i for i, last in enumerate(rows_end) if ex - last >= 22),
                     len(rows_end))
        if level == len(rows_end):
            rows_end.append(ex)
        rows_end[level] = ex
        placed.append((ex, level))
    top = max(1, len(rows_end)) * MARK_ROW + 8
    lanes_bottom = top + len(lanes) * LANE
    resume_row = lanes_bottom + 4
    axis_y = resume_row + 30
    height = axis_y + AXIS + 14

    for index, (name, kind) in enumerate(lanes):
        y = top + index * LANE
        shapes.append(Shape("rect", f"lane lane-{index % 2}", x=GUTTER, y=y, width=plot,
                            height=LANE))
        shapes.append(Shape("text", f"lane-label {kind}", x=GUTTER - 8, y=y + LANE / 2 + 4,
                            text=name if kind == "effect" else f"undo {name}", anchor="end"))
    lane_of = {(name, kind): top + i * LANE for i, (name, kind) in enumerate(lanes)}
    for row in instance.rows:
        y = lane_of[(row.step, row.kind)]
        left = x(row.start)
        width = max(x(row.finish) - left, MIN_MARK)
        title = (f"{row.step} {row.kind}, attempt {row.attempt}: {row.outcome} at "
                 f"{row.start:.3f} s by worker pid {row.worker_pid} "
                 f"(idempotency key {row.idempotency_key})")
        shapes.append(Shape("rect", f"mark {row.outcome}", x=left, y=y + 5, width=width,
                            height=LANE - 10, title=title))
        if row.attempt > 1 or row.outcome != "applied":
            note = f"#{row.attempt} {row.outcome.replace('_', ' ')}"
            anchor = "end" if left > GUTTER + plot * 0.8 else "start"
            shapes.append(Shape("text", "mark-note", x=left + (-4 if anchor == "end" else
                                                                width + 4),
                                y=y + LANE / 2 + 4, text=note, anchor=anchor))
    for event, (ex, level) in zip(events, placed, strict=True):
        shapes.append(Shape("line", f"event {event.category}", x=ex,
                            y=level * MARK_ROW + 17, x2=ex, y2=axis_y))
        shapes.append(Shape("circle", f"badge {event.category}", x=ex,
                            y=level * MARK_ROW + 9, r=8,
                            title=f"{event.number}. {event.at:.3f} s {event.label}: "
                                  f"{event.detail}"))
        shapes.append(Shape("text", "badge-number", x=ex, y=level * MARK_ROW + 13,
                            text=str(event.number), anchor="middle"))
    shapes.extend(_resume(run, instance, x, resume_row))
    for tick in _ticks(end):
        tx = x(tick)
        shapes.append(Shape("line", "tick", x=tx, y=axis_y, x2=tx, y2=axis_y + 5))
        shapes.append(Shape("text", "tick-label", x=tx, y=axis_y + 18, text=_tick(tick),
                            anchor="middle"))
    shapes.append(Shape("line", "axis", x=GUTTER, y=axis_y, x2=GUTTER + plot, y2=axis_y))
    shapes.append(Shape("text", "axis-label", x=GUTTER + plot / 2, y=axis_y + 36,
                        text="seconds since the run started", anchor="middle"))
    return Svg(width=WIDTH, height=height, shapes=tuple(shapes),
               label=f"Timeline of {instance.instance_id} in run {run.run_id}")


def _lanes(instance: InstanceReport, flow: FlowInfo) -> list[tuple[str, str]]:
    """Steps in flow order, each followed by its compensation lane when one ran; steps
    only the ledger knows (a deploy added them) come last."""
    compensated = {r.step for r in instance.rows if r.kind == "compensation"}
    lanes: list[tuple[str, str]] = []
    for step in flow.steps:
        lanes.append((step.name, "effect"))
        if step.name in compensated:
            lanes.append((step.name, "compensation"))
    for row in instance.rows:
        if (row.step, row.kind) not in lanes:
            lanes.append((row.step, row.kind))
    return lanes


def _resume(run: RunReport, instance: InstanceReport, x: Callable[[float], float],
            y: float) -> list[Shape]:
    fault = next((e for e in run.events if e.kind == "fault-fired"), None)
    resume = instance.resume
    if fault is None or resume is None:
        return []
    left = x(fault.at)
    if resume.resumed_time is None:
        return [Shape("line", "resume-line bad", x=left, y=y + 2, x2=left, y2=y + 12),
                Shape("text", "resume-text bad", x=left + 6, y=y + 22,
                      text=f"nothing ran after the fault: {resume.in_flight} was never "
                           "resumed")]
    right = x(resume.resumed_time)
    good = "good" if resume.exact else "bad"
    where = f"resumed at {resume.resumed_at}" + ("" if resume.exact else
                                                 f", not at {resume.in_flight}")
    text = f"{where} after {seconds(resume.time_to_resume or 0.0)}"
    anchor = "end" if right > GUTTER + (WIDTH - GUTTER) * 0.6 else "start"
    return [
        Shape("line", f"resume-line {good}", x=left, y=y + 7, x2=right, y2=y + 7),
        Shape("line", f"resume-line {good}", x=left, y=y + 2, x2=left, y2=y + 12),
        Shape("circle", f"resume-dot {good}", x=right, y=y + 7, r=4, title=text),
        Shape("text", f"resume-text {good}", x=right if anchor == "end" else left,
              y=y + 24, text=text, anchor=anchor),
    ]


def resume_plot(stats: tuple[ResumeStats, ...]) -> Svg | None:
    """Time to resume per engine: every instance as a dot on a log scale, with the box
    from the lower to the upper quartile and the median as a bar."""
    values = [p.seconds for s in stats for p in s.points if p.seconds > 0]
    if not values:
        return None
    low = 10 ** math.floor(math.log10(min(values)))
    high = 10 ** math.ceil(math.log10(max(values)))
    if high <= low * 10:
        high = low * 100
    plot = WIDTH - GUTTER - 160
    row = 44.0

    def x(value: float) -> float:
        value = min(max(value, low), high)
        return GUTTER + (math.log10(value) - math.log10(low)) / (
            math.log10(high) - math.log10(low)) * plot

    shapes: list[Shape] = []
    for index, item in enumerate(stats):
        y = 10 + index * row
        middle = y + row / 2
        shapes.append(Shape("rect", f"lane lane-{index % 2}", x=GUTTER, y=y, width=plot,
                            height=row))
        shapes.append(Shape("text", "lane-label", x=GUTTER - 8, y=middle + 4, text=item.engine,
                            anchor="end"))
        if item.points and item.minimum is not None and item.maximum is not None:
            shapes.append(Shape("line", "whisker", x=x(item.minimum), y=middle,
                                x2=x(item.maximum), y2=middle))
            if item.lower_quartile is not None and item.upper_quartile is not None:
                shapes.append(Shape("rect", "box", x=x(item.lower_quartile), y=middle - 9,
                                    width=max(x(item.upper_quartile) - x(item.lower_quartile),
                                              1.0), height=18))
            if item.median is not None:
                shapes.append(Shape("line", "median", x=x(item.median), y=middle - 12,
                                    x2=x(item.median), y2=middle + 12,
                                    title=f"median {seconds(item.median)}"))
        for number, point in enumerate(item.points):
            shapes.append(Shape(
                "circle", f"dot {'good' if point.exact else 'bad'}", x=x(point.seconds),
                y=middle + (number % 3 - 1) * 6, r=5,
                title=(f"{point.instance_id} ({point.cell}): {seconds(point.seconds)}"
                       f"{'' if point.exact else ', not at the step in flight'}")))
        note = (f"{len(item.points)} resumed" if item.points else "none resumed") + (
            f", {item.not_resumed} never" if item.not_resumed else "")
        shapes.append(Shape("text", "plot-note" + (" bad" if item.not_resumed else ""),
                            x=GUTTER + plot + 8, y=middle + 4, text=note))
    axis_y = 10 + len(stats) * row
    shapes.append(Shape("line", "axis", x=GUTTER, y=axis_y, x2=GUTTER + plot, y2=axis_y))
    decade = low
    while decade <= high * 1.0001:
        tx = x(decade)
        shapes.append(Shape("line", "tick", x=tx, y=axis_y, x2=tx, y2=axis_y + 5))
        shapes.append(Shape("text", "tick-label", x=tx, y=axis_y + 18,
                            text=f"{decade:g} s", anchor="middle"))
        decade *= 10
    shapes.append(Shape("text", "axis-label", x=GUTTER + plot / 2, y=axis_y + 36,
                        text="time from the fault to the next effect (log scale)",
                        anchor="middle"))
    return Svg(width=WIDTH, height=axis_y + AXIS + 14, shapes=tuple(shapes),
               label="Time to resume per engine")
