"""The bench's results for people and machines: `benchmarks.md` with SVG charts beside
it, and `benchmarks.json`. The charts are plain shapes (`graduate.reports.svg.Shape`)
written out by a template, so that no plotting library is needed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graduate.bench.suite import SECTIONS
from graduate.errors import ConfigError
from graduate.evidence import write_json
from graduate.files import parse_json, read_text, unwritable
from graduate.reports.render import template
from graduate.reports.svg import Shape, Svg

WIDTH = 640.0
ROW = 28.0
LEFT = 180.0
PAD = 20.0


def ratio_chart(label: str, rows: Sequence[tuple[str, dict[str, float]]],
                target: float | None) -> Svg:
    """Horizontal bars: each row's median ratio, a whisker from its lowest to highest
    run, the line at 1 (as fast as the plain SDK) and the target's line."""
    top = max([1.0, *(r["high"] for _, r in rows)]) * 1.1
    span = WIDTH - LEFT - PAD

    def x(value: float) -> float:
        return LEFT + span * value / top

    height = PAD * 2 + ROW * len(rows) + 20
    shapes = [Shape("text", "title", x=PAD, y=PAD - 4, text=label)]
    for number, (name, ratio) in enumerate(rows):
        y = PAD + ROW * number + 6
        shapes += [
            Shape("text", "label", x=LEFT - 8, y=y + 14, text=name, anchor="end"),
            Shape("rect", "bar", x=LEFT, y=y, width=x(ratio["median"]) - LEFT, height=ROW - 10,
                  title=f"{name}: {ratio['median']:.2f} (from {ratio['low']:.2f} to "
                        f"{ratio['high']:.2f} over {ratio['runs']:g} runs)"),
            Shape("line", "whisker", x=x(ratio["low"]), y=y + (ROW - 10) / 2,
                  x2=x(ratio["high"]), y2=y + (ROW - 10) / 2),
            Shape("text", "value", x=x(ratio["median"]) + 4, y=y + 14,
                  text=f"{ratio['median']:.2f}x"),
        ]
    bottom = PAD + ROW * len(rows) + 4
    for value, cls in ((1.0, "reference"), (target, "target")):
        if value is not None:
            shapes += [Shape("line", cls, x=x(value), y=PAD, x2=x(value), y2=bottom),
                       Shape("text", "axis", x=x(value), y=bottom + 14, text=f"{value:g}x",
                             anchor="middle")]
    return Svg(WIDTH, height, label, tuple(shapes))


def bar_chart(label: str, rows: Sequence[tuple[str, float]], unit: str) -> Svg:
    """Horizontal bars of plain values (seconds, megabytes)."""
    top = max([1e-9, *(v for _, v in rows)]) * 1.15
    span = WIDTH - LEFT - PAD
    shapes = [Shape("text", "title", x=PAD, y=PAD - 4, text=label)]
    for number, (name, value) in enumerate(rows):
        y = PAD + ROW * number + 6
        shapes += [
            Shape("text", "label", x=LEFT - 8, y=y + 14, text=name, anchor="end"),
            Shape("rect", "bar", x=LEFT, y=y, width=span * value / top, height=ROW - 10,
                  title=f"{name}: {value:.3g} {unit}"),
            Shape("text", "value", x=LEFT + span * value / top + 4, y=y + 14,
                  text=f"{value:.3g} {unit}"),
        ]
    return Svg(WIDTH, PAD * 2 + ROW * len(rows), label, tuple(shapes))


Point = tuple[float, float]


def line_chart(label: str, x_label: str, series: dict[str, list[Point]], unit: str) -> Svg:
    """One line per series (an engine) through its points, x on a log scale (instances
    grow tenfold), y from 0; each point labelled with its value."""
    xs = sorted({x for points in series.values() for x, _ in points})
    top = max([1e-9, *(y for points in series.values() for _, y in points)]) * 1.15
    left, bottom, height = 70.0, 250.0, 300.0
    low, high = math.log10(min(xs)), math.log10(max(xs))

    def at(x: float, y: float) -> Point:
        share = (math.log10(x) - low) / (high - low) if high > low else 0.5
        return (left + (WIDTH - left - 140) * share, bottom - (bottom - PAD - 10) * y / top)

    shapes = [Shape("text", "title", x=PAD, y=PAD - 4, text=label),
              Shape("line", "axis-line", x=left, y=bottom, x2=WIDTH - 140, y2=bottom),
              Shape("line", "axis-line", x=left, y=bottom, x2=left, y2=PAD + 10),
              Shape("text", "axis", x=left - 6, y=PAD + 18, text=f"{top / 1.15:.3g} {unit}",
                    anchor="end"),
              Shape("text", "axis", x=left - 6, y=bottom, text="0", anchor="end"),
              Shape("text", "axis", x=(left + WIDTH - 140) / 2, y=bottom + 34, text=x_label,
                    anchor="middle")]
    shapes += [Shape("text", "axis", x=at(x, 0)[0], y=bottom + 16, text=f"{x:g}",
                     anchor="middle") for x in xs]
    for number, (name, points) in enumerate(series.items()):
        cls = f"series-{number % 4}"
        ordered = sorted(points)
        placed = [at(x, y) for x, y in ordered]
        shapes += [Shape("line", cls, x=a[0], y=a[1], x2=b[0], y2=b[1])
                   for a, b in itertools.pairwise(placed)]
        shapes += [Shape("circle", cls, x=px, y=py, r=3.5,
                         title=f"{name} at {x:g}: {y:.3g} {unit}")
                   for (x, y), (px, py) in zip(ordered, placed, strict=True)]
        shapes += [Shape("text", "value", x=px + 5, y=py - 5, text=f"{y:.3g}")
                   for (_, y), (px, py) in zip(ordered, placed, strict=True)]
        legend_y = PAD + 20 + 18 * number
        shapes += [Shape("line", cls, x=WIDTH - 130, y=legend_y - 4, x2=WIDTH - 110,
                         y2=legend_y - 4),
                   Shape("text", "label", x=WIDTH - 105, y=legend_y, text=name)]
    return Svg(WIDTH, height, label, tuple(shapes))


# What each scale plot shows: (file, title, the row's figure, unit).
SCALE_FIGURES = (
    ("time", "time to finish", "time_to_finish", "s"),
    ("memory", "harness peak memory", "harness_peak_mb", "MB"),
    ("lost", "instances lost", "lost", ""),
    ("duplicated", "effects applied twice", "duplicates", ""),
)


def _scale_charts(rows: Sequence[dict[str, Any]]) -> dict[str, Svg]:
    """For each figure, one plot by instances (at the fewest steps) and one by steps per
    flow (at the fewest instances), when the rows vary it."""
    measured = [r for r in rows if "error" not in r and r.get("applicable", True)]
    if not measured:
        return {}
    fewest_steps = min(r["steps"] for r in measured)
    fewest = min(r["instances"] for r in measured)
    charts: dict[str, Svg] = {}
    for by, key, fixed, other in (("instances", "instances", "steps", fewest_steps),
                                  ("steps", "steps", "instances", fewest)):
        chosen = [r for r in measured if r[fixed] == other]
        if len({r[key] for r in chosen}) < 2:
            continue
        for name, title, figure, unit in SCALE_FIGURES:
            series: dict[str, list[Point]] = {}
            for row in chosen:
                value = row[figure]
                series.setdefault(row["engine"], []).append(
                    (float(row[key]), float(value) if value is not None else 0.0))
            where = (f"{other} steps per flow" if by == "instances"
                     else f"{other} instances")
            charts[f"scale-{name}-by-{by}"] = line_chart(
                f"{title[0].upper()}{title[1:]} by {by.replace('steps', 'steps per flow')} "
                f"({where})", by.replace("steps", "steps per flow"), series, unit)
    return charts


def _charts(results: dict[str, Any]) -> dict[str, Svg]:
    charts: dict[str, Svg] = {}
    overhead = results.get("overhead")
    if overhead:
        charts["overhead"] = ratio_chart(
            "graduate / plain SDK: flows per second (1 = as fast; target 0.95)",
            [(engine, figures["throughput_ratio"]) for engine, figures in overhead.items()],
            target=0.95)
    matrix = results.get("matrix")
    if matrix:
        demo = matrix["demo"]
        charts["matrix"] = bar_chart("Where the demo matrix's cells spent their time", [
            ("engine recovery", demo["recovery"]),
            ("waiting for a deadline", demo["deadline_wait"]),
            ("harness", demo["harness"])], "s")
    charts.update(_scale_charts(results.get("scale") or []))
    return charts


def merged(results: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """`results`, with each section it did not measure kept from `previous` (with when,
    where and under what load that section was measured): the sections take hours
    together, so one may be measured again alone."""
    kept = dict(results)
    measured = {**previous.get("measured", {}), **results.get("measured", {})}
    for section in SECTIONS:
        if section not in results and section in previous:
            kept[section] = previous[section]
    kept["options"] = {**previous.get("options", {}), **results.get("options", {})}
    kept["measured"] = {s: measured[s] for s in SECTIONS if s in kept and s in measured}
    return kept


def previous_bench(out: Path) -> dict[str, Any]:
    """The `benchmarks.json` already in `out` ({} when there is none). A bench reads it
    before it measures, so that an --out that is not a folder, or a damaged file, is
    refused before the hours of measuring rather than after."""
    if problem := unwritable(out):
        raise ConfigError(f"--out {out} cannot be written ({problem}); give the folder for "
                          "benchmarks.md, benchmarks.json and the charts")
    path = out / "benchmarks.json"
    if not path.exists():
        return {}
    where = f"{path} (the benchmarks measured before, kept for the sections not run now)"
    fix = "restore it from git, or move it away to start anew"
    try:
        data = parse_json(read_text(path, "benchmarks file", ConfigError), where, ConfigError)
    except ConfigError as error:
        raise ConfigError(f"{error}; {fix}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} holds a JSON {type(data).__name__}, not benchmarks; {fix}")
    return data


def write_bench(results: dict[str, Any], out: Path) -> list[Path]:
    """`benchmarks.json`, `benchmarks.md` and its charts (`benchmarks/NAME.svg`) in `out`;
    sections this bench did not measure are kept from the `benchmarks.json` already
    there (see `merged`)."""
    if previous := previous_bench(out):
        results = merged(results, previous)
    charts = _charts(results)
    written = []
    folder = out / "benchmarks"
    json_path = out / "benchmarks.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, chart in charts.items():
            path = folder / f"{name}.svg"
            path.write_text(template("chart.svg.j2").render(chart=chart), encoding="utf-8")
            written.append(path)
        write_json(json_path, results)
        md_path = out / "benchmarks.md"
        md_path.write_text(template("benchmarks.md.j2").render(results=results,
                                                               charts=sorted(charts)),
                           encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write the benchmarks into {out} ({error.strerror}); give "
                          "--out a folder you can write to") from error
    return [md_path, json_path, *written]
