"""The cost of `graduate.effect` outside a run: what production code pays for it.

    python benchmarks/bench_effect.py

Prints the time per call of a bare function, of the same call inside
`with graduate.effect(...)`, and through the decorator form; the target is under
2 µs per call for the instrumentation itself.
"""

from __future__ import annotations

import os
import sys
import timeit

from graduate.instrument import RunContext, effect

NUMBER = 200_000
REPEAT = 5
TARGET_US = 2.0


def activate(order: str) -> str:
    return order


@effect("partner_portal.activate", key=lambda order: order)
def decorated(order: str) -> str:
    return order


def wrapped(order: str) -> str:
    with effect("partner_portal.activate", key=order):
        return activate(order)


def per_call_us(statement: str) -> float:
    """The best of REPEAT runs, in microseconds per call."""
    runs = timeit.repeat(statement, globals=globals(), number=NUMBER, repeat=REPEAT)
    return min(runs) / NUMBER * 1e6


def main() -> int:
    if RunContext.from_environ(os.environ) is not None:
        print("unset the GRADUATE_RUN_* variables: this measures the path outside a run")
        return 2
    bare = per_call_us("activate('p-1')")
    with_block = per_call_us("wrapped('p-1')")
    decorator = per_call_us("decorated('p-1')")
    overhead = with_block - bare
    print(f"bare call:                   {bare:.3f} µs")
    print(f"with graduate.effect(...):   {with_block:.3f} µs  (+{overhead:.3f} µs)")
    print(f"@graduate.effect(...):       {decorator:.3f} µs  (+{decorator - bare:.3f} µs)")
    verdict = "within" if overhead < TARGET_US else "OVER"
    print(f"overhead of the with form: {overhead:.3f} µs per call, {verdict} the "
          f"{TARGET_US:.0f} µs target")
    return 0 if overhead < TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
