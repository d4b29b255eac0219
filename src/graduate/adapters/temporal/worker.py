"""A Temporal worker process: `python -m graduate.adapters.temporal.worker RUN_DIR`.

Its WorkerSpec arrives as JSON on standard input (see `start_worker_process`).

It loads the flow from its source (the worker's own code), registers the interpreter
workflow and the effect activity, writes its ready file once it polls, and shuts
down gracefully on SIGTERM or SIGINT, as a deploy would ask it to.
"""

from __future__ import annotations

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from graduate.adapters.base import WorkerSpec, write_ready_file
from graduate.adapters.temporal import registry
from graduate.adapters.temporal.activities import EffectActivities
from graduate.adapters.temporal.client import connect
from graduate.adapters.temporal.messages import build_id, deployment_name, task_queue
from graduate.adapters.temporal.workflow import GraduateFlow
from graduate.flow import Flow, load_flow
from graduate.processes import leave

ACTIVITY_THREADS = 8
# Workflows a worker keeps in its sticky cache (the SDK's default is 1,000). Past it, a
# workflow task of one pushed out fetches its whole history and replays it in a new
# sandbox: with five times the instances in flight that the cache held (1,000 against a
# cache of 200), 447 of the first 568 sticky tasks did. The cache holds only workflows
# in flight (one is evicted when it completes), about 0.1 MB each for the scale flow;
# docs/adr/0019.
CACHED_WORKFLOWS = 10_000


def deployment_config(spec: WorkerSpec, flow: Flow) -> WorkerDeploymentConfig | None:
    """Under worker versioning, this worker is the flow's version as a build ID, and each
    workflow it starts stays pinned to it: later versions never replay its history."""
    if not spec.settings.get("worker_versioning"):
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(deployment_name(flow.name, spec.run_id),
                                        build_id(flow.version)),
        use_worker_versioning=True, default_versioning_behavior=VersioningBehavior.PINNED)


async def serve(spec: WorkerSpec) -> None:
    flow = load_flow(spec.flow_source)
    previous = spec.previous_flow_source
    registry.register(flow, load_flow(previous) if previous else None)
    client = await connect(spec.temporal())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    grace = float(spec.settings.get("graceful_shutdown_timeout", 0.0))
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS) as executor:
        worker = Worker(
            client,
            task_queue=task_queue(flow.name, spec.run_id),
            workflows=[GraduateFlow],
            activities=[EffectActivities(spec.services["ledger_url"]).perform],
            activity_executor=executor,
            max_concurrent_activities=ACTIVITY_THREADS,
            max_cached_workflows=CACHED_WORKFLOWS,
            graceful_shutdown_timeout=timedelta(seconds=grace),
            deployment_config=deployment_config(spec, flow),
            # graduate's own modules are deterministic data and code; passing them through
            # lets the workflow see the flow this worker loaded (see registry.py).
            workflow_runner=SandboxedWorkflowRunner(
                restrictions=SandboxRestrictions.default.with_passthrough_modules("graduate")
            ),
        )
        async with worker:
            write_ready_file(spec.ready_file, os.getpid())
            await stop.wait()


def main() -> None:
    asyncio.run(serve(WorkerSpec.from_stdin()))
    # Shut down cleanly: finalising could still abort (a warm stop then exited -6).
    leave(0)


if __name__ == "__main__":
    main()
