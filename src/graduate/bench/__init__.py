"""Benchmarks of graduate and the engines under it (`graduate bench`): what the harness
and `graduate.effect` cost, how a crash matrix spends its time, and how far one machine
goes. `run_bench` measures; `write_bench` writes `benchmarks.md`, its SVG charts and
`benchmarks.json`."""

from graduate.bench.report import previous_bench, write_bench
from graduate.bench.suite import SECTIONS, BenchOptions, run_bench

__all__ = ["SECTIONS", "BenchOptions", "previous_bench", "run_bench", "write_bench"]
