"""Run by test_engine_close: a Temporal engine closed with thousands of reads still in
flight (a judging read cut off by an exception), then its server stopped, so that the
SDK answers every one of them from its own threads after `close` returned."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

from graduate.adapters.temporal import engine as temporal_engine
from graduate.adapters.temporal.engine import TemporalEngine, read_together
from graduate.flow import load_flow
from graduate.services.local import LocalTemporal
from graduate.services.model import Services, TemporalTarget

READS = 2000
# How long the SDK has to answer its calls once the server is gone (connection refused
# comes back within milliseconds; its retries of an unavailable server within seconds).
ANSWER_WINDOW = 3.0


class CutOff(Exception):
    pass


def main(state: Path, flow_path: str) -> None:
    temporal_engine.CLOSE_WAIT = 0.05  # the slowest read outlives close's wait
    server = LocalTemporal.create(state, first_free=True)
    server.start()
    try:
        services = Services(temporal=TemporalTarget(server.address), broker_url=None,
                            result_backend_url=None, ledger_url="sqlite://",
                            app_db_url="sqlite://")
        engine = TemporalEngine(load_flow(flow_path), services, state / "run")

        reads: list[asyncio.Future[object]] = []

        async def cut_off() -> None:
            ids = [f"never-started-{n}" for n in range(READS)]
            reads.append(asyncio.ensure_future(read_together(engine._status, ids)))
            await asyncio.sleep(0.05)
            raise CutOff

        with contextlib.suppress(CutOff):
            engine._run(cut_off())  # as a read the judging cut off
        engine.close()
    finally:
        server.stop()
    print("server stopped", flush=True)
    time.sleep(ANSWER_WINDOW)
    print("exiting", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
