"""Where a test run's wall time went, from its JUnit file (tests/conftest.py records each
test's xdist worker, start time and CPU-seconds): each worker's busy and idle time, each
xdist group's (lane's) time and end, the tests that ended last, and how many cores the
tests kept busy. Usage: python .ci/timeline.py .graduate/ci-evidence/junit.xml
"""

from __future__ import annotations

import collections
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    worker: str
    start: float
    seconds: float
    cpu: float

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def group(self) -> str:
        found = re.search(r"@([\w-]+)\]?$", self.name)
        return found.group(1) if found else ""


def read(path: str) -> list[Case]:
    cases = []
    for case in ET.parse(path).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "started" not in props:
            continue  # a run from before tests/conftest.py recorded them
        cases.append(Case(f"{case.get('classname')}::{case.get('name')}",
                          props.get("worker") or "-", float(props["started"] or 0),
                          float(case.get("time") or 0), float(props.get("cpu") or 0)))
    return cases


def main(path: str) -> None:
    cases = read(path)
    if not cases:
        sys.exit(f"{path}: no test carries its worker and start time")
    begin, end = min(c.start for c in cases), max(c.end for c in cases)
    wall = end - begin
    print(f"{len(cases)} tests, {wall:.0f} s from the first start to the last end; "
          f"{sum(c.seconds for c in cases):.0f} s of tests, "
          f"{sum(c.cpu for c in cases):.0f} CPU-s in the workers and the processes they "
          f"reaped: {sum(c.cpu for c in cases) / wall:.2f} cores on average")
    print("\nworker   first start  last end    busy   idle")
    by_worker: dict[str, list[Case]] = collections.defaultdict(list)
    for case in cases:
        by_worker[case.worker].append(case)
    for worker, own in sorted(by_worker.items()):
        busy = sum(c.seconds for c in own)
        first, last = min(c.start for c in own) - begin, max(c.end for c in own) - begin
        print(f"{worker:8} {first:10.0f} s {last:7.0f} s {busy:6.0f} s {wall - busy:5.0f} s")
    print("\ngroup (lane)              tests   time    ends at")
    by_group: dict[str, list[Case]] = collections.defaultdict(list)
    for case in cases:
        by_group[case.group].append(case)
    for group, own in sorted(by_group.items(), key=lambda kv: -sum(c.seconds for c in kv[1])):
        print(f"{group or '(none)':25} {len(own):5} {sum(c.seconds for c in own):6.0f} s "
              f"{max(c.end for c in own) - begin:6.0f} s")
    print("\nthe tests that ended last (start, duration, CPU-s):")
    for case in sorted(cases, key=lambda c: c.end)[-10:]:
        print(f"{case.start - begin:7.0f} s {case.seconds:6.1f} s {case.cpu:6.1f}  {case.worker}"
              f"  {case.name[:110]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".graduate/ci-evidence/junit.xml")
