"""Times in words a reader takes in at a glance: 6 ms, 1.5 s, 72 h."""

from __future__ import annotations

HOUR = 3600.0


def seconds(value: float | None) -> str:
    """A measured time: milliseconds under a second, else seconds to one decimal."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def duration(value: float) -> str:
    """A configured duration in the largest unit that keeps it readable: 72 h, 5 s."""
    for unit, size, above in (("d", 86400.0, 7 * 86400.0), ("h", HOUR, 2 * HOUR),
                              ("min", 60.0, 120.0)):
        if value >= above or (value >= size and value % size == 0 and unit != "d"):
            return f"{value / size:g} {unit}"
    return f"{value:g} s"
