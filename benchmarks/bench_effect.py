"""The cost of `graduate.effect`: what production code pays for it.

    python benchmarks/bench_effect.py

The `effect` section of `graduate bench` on its own (`graduate.bench.suite.effect_cost`):
the time per call of a bare function and of the same call inside
`with graduate.effect(...)` outside a run (target: under 2 µs for the instrumentation
itself), and the ledger's record of a call inside a run against a plain SQLite insert.
"""

from __future__ import annotations

import sys
from pathlib import Path

from graduate.bench.suite import effect_cost
from graduate.flow import load_flow

SAMPLE = Path(__file__).resolve().parents[1] / "spikes" / "partner_approval.toml"


def main() -> int:
    cost = effect_cost(load_flow(str(SAMPLE)), lambda what: None)
    overhead, target = cost["outside_overhead_us"], cost["outside_target_us"]
    print(f"bare call:                   {cost['outside_bare_us']:.3f} µs")
    print(f"with graduate.effect(...):   {cost['outside_wrapped_us']:.3f} µs  "
          f"(+{overhead:.3f} µs, {'within' if overhead < target else 'OVER'} the "
          f"{target:g} µs target)")
    print(f"inside a run, the ledger:    {cost['inside_ledger_ms']:.3f} ms per call, "
          f"{cost['inside_ratio']:.2f}x a plain insert "
          f"({cost['inside_plain_insert_ms']:.3f} ms)")
    return 0 if overhead < target else 1


if __name__ == "__main__":
    sys.exit(main())
