"""A stand-in worker: it takes its WorkerSpec as graduate's workers do, writes down the
services it received, says it is ready, and waits to be stopped."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from graduate.adapters.base import WorkerSpec, write_ready_file


def main() -> None:
    spec = WorkerSpec.from_stdin()
    Path(spec.settings["received"]).write_text(json.dumps(spec.services), encoding="utf-8")
    write_ready_file(spec.ready_file, os.getpid())
    signal.pause()


if __name__ == "__main__":
    main()
