"""A stand-in worker that says how it was run: its module name, command line and the
services of its WorkerSpec (on standard output, as JSON), then says it is ready and waits
to be stopped."""

from __future__ import annotations

import json
import os
import signal
import sys

from graduate.adapters.base import WorkerSpec, write_ready_file


def main() -> None:
    spec = WorkerSpec.from_stdin()
    print(json.dumps({"name": __name__, "argv": sys.argv[1:], "services": spec.services}),
          flush=True)
    write_ready_file(spec.ready_file, os.getpid())
    signal.pause()


if __name__ == "__main__":
    main()
