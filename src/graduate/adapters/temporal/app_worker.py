"""A worker of a team's own Temporal app, run by graduate:
`python -m graduate.adapters.temporal.app_worker MODULE:FACTORY READY_FILE`.

The factory (the app's declared `worker`) says which workflows, activities and task
queue; graduate builds the worker around them with its correlation interceptor and a
thread pool for synchronous activities, connects to the frontend given by the
environment (GRADUATE_TEMPORAL_ADDRESS and the other GRADUATE_TEMPORAL_* settings, never
the command line), writes READY_FILE once it polls, and shuts down gracefully on SIGTERM.
Under a run its environment also carries `graduate.instrument.RunContext`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.worker import Interceptor, Worker

from graduate.adapters.base import write_ready_file
from graduate.adapters.temporal.application import load_worker
from graduate.adapters.temporal.client import connect
from graduate.adapters.temporal.instrument import CorrelationInterceptor
from graduate.config import load_settings
from graduate.errors import ConfigError
from graduate.services.model import TemporalTarget

ACTIVITY_THREADS = 8


def target_from_environment() -> TemporalTarget:
    """The Temporal frontend from graduate's settings (environment over pyproject)."""
    settings = load_settings(project_dir=Path.cwd())
    if not settings.temporal_address:
        raise ConfigError("no Temporal frontend for the app's worker: set "
                          "GRADUATE_TEMPORAL_ADDRESS (graduate's harness sets it)")
    return TemporalTarget(
        address=settings.temporal_address, namespace=settings.temporal_namespace,
        tls_cert=settings.temporal_tls_cert, tls_key=settings.temporal_tls_key,
        tls_ca=settings.temporal_tls_ca, api_key=settings.temporal_api_key)


async def serve(factory: str, ready_file: str) -> None:
    parts = load_worker(factory, f"worker factory {factory}")
    client = await connect(target_from_environment())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        worker = Worker(client, task_queue=parts.task_queue, workflows=list(parts.workflows),
                        activities=list(parts.activities), activity_executor=executor,
                        max_concurrent_activities=ACTIVITY_THREADS,
                        interceptors=[CorrelationInterceptor(), *[
                            i for i in parts.interceptors if isinstance(i, Interceptor)]])
        async with worker:
            write_ready_file(ready_file, os.getpid())
            await stop.wait()


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise ConfigError("usage: python -m graduate.adapters.temporal.app_worker "
                          "MODULE:FACTORY READY_FILE (graduate starts these itself)")
    sys.path.insert(0, str(Path.cwd()))  # the team's modules, from the project's folder
    asyncio.run(serve(argv[0], argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
