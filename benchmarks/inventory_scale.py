"""How `graduate inventory`'s time grows with the number of tasks in one codebase.

    python benchmarks/inventory_scale.py 2000 5000 20000 [--profile N] [--files K]

Writes a generated Celery codebase of N tasks (one module, or K modules) to a temporary
folder and times `inventory()` on it. Each task calls a helper, an HTTP client, and
every third one starts the next by `.delay()`; every tenth builds a chain; a beat entry
every hundred. The numbers are for the report (reports/ and ADR 0031), not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from graduate.migrate.inventory import inventory


def _module(first: int, count: int, total: int) -> str:
    lines = ["import requests", "from celery import Celery, chain", "",
             "app = Celery('gen', broker='redis://localhost')",
             "app.conf.task_acks_late = True", "",
             "def helper(x):", "    return requests.get(f'https://x/{x}')", ""]
    for i in range(first, first + count):
        lines += ["@app.task(bind=True, max_retries=3)",
                  f"def task_{i}(self, order_id):",
                  "    helper(order_id)",
                  "    row = Order.objects.get(id=order_id)",
                  f"    row.status = 'step_{i}'",
                  "    row.save()"]
        if i % 3 == 0 and i + 1 < total:
            lines.append(f"    task_{i + 1}.delay(order_id)")
        if i % 10 == 0 and i + 2 < total:
            lines.append(f"    chain(task_{i + 1}.s(order_id), task_{i + 2}.s()).apply_async()")
        lines.append("")
    lines.append("app.conf.beat_schedule = {")
    for i in range(first, first + count, 100):
        lines.append(f"    'beat-{i}': {{'task': 'gen.task_{i}', 'schedule': 60.0}},")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate(folder: Path, tasks: int, files: int = 1) -> None:
    per = -(-tasks // files)
    for k in range(files):
        first = k * per
        count = min(per, tasks - first)
        text = _module(first, count, tasks)
        (folder / f"tasks_{k}.py").write_text(text)
    if files > 1:
        (folder / "__init__.py").write_text("")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--files", type=int, default=1)
    args = parser.parse_args()
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp), size, args.files)
            started = time.perf_counter()
            if args.profile:
                profile = cProfile.Profile()
                found = profile.runcall(inventory, tmp)
            else:
                found = inventory(tmp)
            elapsed = time.perf_counter() - started
            tasks = sum(1 for f in found.findings if f.kind.value == "task")
            print(f"{size} tasks ({args.files} file(s)): {elapsed:.1f} s, {tasks} tasks found, "
                  f"{len(found.flows)} flows", flush=True)
            if args.profile:
                pstats.Stats(profile).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
