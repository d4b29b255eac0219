"""The hand-written state machine the celery-state-machine engine is benched against
does what the flow asks of one: an approved row runs to its end, and a row whose wait's
deadline passes is ended by the sweep, as graduate's tick expires a wait."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from graduate.adapters import needs, open_plain
from graduate.adapters.base import services_for_worker
from graduate.adapters.celery.plain_state_machine import EXPIRED
from graduate.adapters.plain import PlainSpec, create_database
from graduate.config import Settings
from graduate.services.provider import open_stack

NODES = (("step", "draft"), ("wait", "approval"), ("step", "sign"))


def _cursors(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT instance, cursor FROM progress").fetchall()
    connection.close()
    return dict(rows)


@pytest.mark.parametrize("engine", ["celery-state-machine"])
def test_an_unanswered_wait_expires_and_an_answered_one_runs_on(settings: Settings,
                                                                 tmp_path: Path,
                                                                 engine: str) -> None:
    database = tmp_path / "plain.sqlite3"
    create_database(database)
    with open_stack(settings, needs([engine]), use_kept=False) as stack:
        spec = PlainSpec(nodes=NODES, services=services_for_worker(stack.services),
                         database=str(database), queue=f"plain-sm-{tmp_path.name}",
                         ready_file=str(tmp_path / "ready" / "plain.ready"),
                         deadlines={"approval": 1.0})
        with open_plain(engine, spec, tmp_path) as client:
            client.start("answered")
            client.start("unanswered")
            client.signal("answered", "approval")  # waits for the row to reach the wait
            deadline = time.monotonic() + 60
            while _cursors(database) != {"answered": len(NODES), "unanswered": EXPIRED}:
                assert time.monotonic() < deadline, _cursors(database)
                time.sleep(0.1)
    with sqlite3.connect(database) as connection:
        effects = connection.execute("SELECT instance, step FROM effects ORDER BY instance, "
                                     "at").fetchall()
    connection.close()
    assert effects == [("answered", "draft"), ("answered", "sign"), ("unanswered", "draft")]
