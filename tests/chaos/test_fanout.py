"""A worker killed while dd_room grants its parties access, each party's grant a branch
of its own (`for_each`): the fault is armed at `grant_access` and fires once one party's
grant pauses before its effect (the ledger and the timeline name which), with the other
parties' grants running beside it. The worker is a real process, killed with SIGKILL.

Temporal retries the grant in flight on the replacement worker; the state machine's
branch row goes on once its lease runs out. Either way every party ends with access
granted exactly once and the room joins and completes. The access system honours keys
in this copy, so that a sibling's grant the kill cut short and ran again shows as
absorbed, not as a duplicate that would hide what the test is about.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.chaos.faults import POINT_REACHED, parse_plan
from graduate.chaos.harness import ChaosOptions, run_chaos
from graduate.check import Verdict
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import Step, load_flow, write_flow_json
from graduate.ledger import Ledger, Outcome
from graduate.runner import RunOptions, approve_all
from tests.conftest import CRASH_TIMING

pytestmark = [pytest.mark.slow, CRASH_TIMING, pytest.mark.usefixtures("no_orphans")]

DD_ROOM = Path(__file__).resolve().parents[2] / "spikes" / "dd_room.toml"
PARTIES = ("acme", "bidco", "counsel")
INSTANCES = 2
_copies = itertools.count(1)


@pytest.fixture
def dd_room(tmp_path: Path) -> Path:
    """dd_room with its grants timing out in 3 s (the engines recover within the test)
    and the access system honouring keys."""
    flow = load_flow(DD_ROOM)
    systems = tuple(replace(s, honours_idempotency=True) for s in flow.systems)
    nodes = tuple(replace(n, timeout=3.0) if isinstance(n, Step) and n.for_each else n
                  for n in flow.nodes)
    path = tmp_path / "dd_room_fanout.json"
    write_flow_json(replace(flow, name=f"dd_room_fanout_{os.getpid()}_{next(_copies)}",
                            systems=systems, nodes=nodes), path)
    return path


@pytest.mark.parametrize(("engine", "profile"), [("temporal", "defaults"),
                                                 ("celery-state-machine", "tuned")])
def test_a_worker_killed_at_one_partys_grant_leaves_every_party_granted_once(
        settings: Settings, dd_room: Path, engine: str, profile: str) -> None:
    flow = load_flow(dd_room)
    store = EvidenceStore(settings.project_dir / "evidence")
    options = ChaosOptions(
        run=RunOptions(flow=str(dd_room), engine=engine, instances=INSTANCES, timeout=60,
                       decisions=approve_all(flow), input={"parties": PARTIES}),
        plan=parse_plan("kill-worker", "grant_access:before-effect", flow,
                        restart_delay=0.5),
        profile=profile)

    result = run_chaos(settings, options, store)

    assert result.applicable, result.reason
    assert result.fired, result.reason
    ledger = Ledger(settings.ledger)
    # The first instance to get there, and any other that sat there too when the worker
    # died: each resumed at the very party's grant it was paused at.
    paused = [i for i in result.instances if i.resume is not None
              and i.resume.affected_as == "at the fault point"]
    assert paused
    caught = {}
    for instance in paused:
        reached = ledger.reached(instance.instance_id, "grant_access", "before-effect")
        assert reached is not None
        assert reached.expansion in {f"grant_access[{p}]" for p in PARTIES}
        assert instance.resume is not None
        assert instance.resume.in_flight == reached.expansion
        assert instance.resume.exact
        caught[instance.instance_id] = reached.expansion
    [event] = [e for e in store.load_run(result.run_id).timeline
               if e.kind == POINT_REACHED.kind]
    assert event.instance in caught
    assert f"(by {caught[event.instance]})" in event.detail
    assert [i.verdict for i in result.instances] == [Verdict.COMPLETED] * INSTANCES
    for instance in result.instances:
        assert instance.input == {"parties": PARTIES}
        for party in PARTIES:
            calls = [e for e in ledger.effects(instance_id=instance.instance_id)
                     if e.step == f"grant_access[{party}]" and e.kind == "effect"]
            assert [e.outcome for e in calls].count(Outcome.APPLIED) == 1, (party, calls)
            assert {e.outcome for e in calls} <= {Outcome.APPLIED, Outcome.ABSORBED}
    assert result.verdict.passed, result.verdict.failures
