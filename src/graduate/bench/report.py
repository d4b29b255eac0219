"""The bench's results for people and machines: `benchmarks.md` with SVG charts beside
it, and `benchmarks.json`. The charts are plain shapes (`graduate.reports.svg.Shape`)
written out by a template, so that no plotting library is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graduate.evidence import write_json
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
        charts["matrix"] = bar_chart("Where the matrix's wall time went", [
            ("engine recovery", matrix["recovery"]),
            ("waiting for a deadline", matrix["deadline_wait"]),
            ("harness", matrix["harness"])], "s")
    rows = results.get("scale")
    if rows:
        charts["scale-time"] = bar_chart(
            "Time to finish under the fault, by instances",
            [(f"{r['engine']} x{r['instances']}", r["time_to_finish"] or 0.0) for r in rows],
            "s")
        charts["scale-memory"] = bar_chart(
            "Harness peak memory (high-water mark so far)",
            [(f"{r['engine']} x{r['instances']}", r["harness_peak_mb"]) for r in rows], "MB")
    return charts


def write_bench(results: dict[str, Any], out: Path) -> list[Path]:
    """`benchmarks.json`, `benchmarks.md` and its charts (`benchmarks/NAME.svg`) in `out`."""
    charts = _charts(results)
    written = []
    folder = out / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, chart in charts.items():
        path = folder / f"{name}.svg"
        path.write_text(template("chart.svg.j2").render(chart=chart), encoding="utf-8")
        written.append(path)
    json_path = out / "benchmarks.json"
    write_json(json_path, results)
    md_path = out / "benchmarks.md"
    md_path.write_text(template("benchmarks.md.j2").render(results=results,
                                                           charts=sorted(charts)),
                       encoding="utf-8")
    return [md_path, json_path, *written]
