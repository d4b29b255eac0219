"""The contract on a `for_each` step, on every engine: dd_room grants access to the
parties each instance is given (`--input parties=...`), one step per party run at the
same time, each with its own idempotency key, applied once; the flow goes on only once
every party has access (the join); and a rejection or the interrupt after the grants
revokes each party once, with its own key, after what followed the grants and before
what preceded them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState
from graduate.config import Settings
from graduate.flow import load_flow
from graduate.ledger import Ledger, Outcome
from graduate.runner import approve_all
from tests.contract.test_engines import assert_traced, effects, run
from tests.contract.test_spikes import (
    assert_in_flow_order,
    assert_undone_in_reverse,
    copy_of,
    steps_before,
)

DD_ROOM = Path(__file__).resolve().parents[2] / "spikes" / "dd_room.toml"
PARTIES = ("acme", "bidco-uk", "counsel")
GRANTS = [f"grant_access[{party}]" for party in PARTIES]


@pytest.mark.parametrize("engine", engine_names())
def test_each_party_is_granted_once_with_its_own_key_and_the_join_waits_for_all(
        settings: Settings, tmp_path: Path, engine: str) -> None:
    path = copy_of(DD_ROOM, tmp_path)
    given = (("parties", PARTIES),)
    flow = load_flow(path).for_instance(given)

    result = run(settings, path, engine, decisions=approve_all(flow),
                 input={"parties": PARTIES})

    [item] = result.instances
    assert item.state is InstanceState.COMPLETED, item.detail
    assert item.steps_total == len(flow.steps) == 7  # 4 steps and one grant per party
    assert Ledger(settings.ledger).instance(item.instance_id).input == given
    rows = effects(settings, item.instance_id)
    grants = [e for e in rows if e.effect == "access.grant"]
    assert sorted((e.step, e.outcome) for e in grants) == [
        (name, Outcome.APPLIED) for name in sorted(GRANTS)]
    assert len({e.idempotency_key for e in grants}) == len(PARTIES)
    assert_in_flow_order(flow, [e.step for e in rows], list(flow.steps))
    # The join: the next step began only once every party's grant had landed.
    [tracker] = [e for e in rows if e.step == "track_requests"]
    assert tracker.started_at >= max(e.finished_at for e in grants)
    assert effects(settings, item.instance_id, "compensation") == []
    assert item.duplicates == 0
    assert_traced(settings, flow, result, engine)


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize("ending", ["rejected", "interrupted"])
def test_an_ending_after_the_grants_revokes_each_party_once_in_reverse(
        settings: Settings, tmp_path: Path, engine: str, ending: str) -> None:
    path = copy_of(DD_ROOM, tmp_path)
    flow = load_flow(path).for_instance((("parties", PARTIES),))
    assert flow.interrupt is not None
    decisions = {"nda_signed": "approve", "diligence": "reject"} if ending == "rejected" else {
        "nda_signed": "approve", flow.interrupt.signal: "interrupt"}

    result = run(settings, path, engine, decisions=decisions, input={"parties": PARTIES},
                 **({"interrupt_at": "diligence"} if ending == "interrupted" else {}))

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    done = steps_before(flow, "diligence")
    assert set(GRANTS) <= {s.name for s in done}
    rows = effects(settings, item.instance_id)
    assert {e.outcome for e in rows} == {Outcome.APPLIED}
    assert_in_flow_order(flow, [e.step for e in rows], done)
    undo = effects(settings, item.instance_id, "compensation")
    assert_undone_in_reverse(flow, undo, done)
    revokes = [e for e in undo if e.effect == "access.revoke"]
    assert sorted(e.step for e in revokes) == sorted(GRANTS)
    assert {e.outcome for e in revokes} == {Outcome.APPLIED}
    request = Ledger(settings.ledger).instance(item.instance_id).request
    assert sorted(e.idempotency_key for e in revokes) == sorted(
        flow.key_for(name, request, compensation=True) for name in GRANTS)
    assert item.duplicates == 0
    assert_traced(settings, flow, result, engine)
