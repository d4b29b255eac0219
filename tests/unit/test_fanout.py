"""A `for_each` step: its expansion per instance (names, keys, compensations, order),
the validation of inputs, the ledger's record of an instance's input (old ledgers
included), a fault point armed at the step, and the checker judging an instance on the
flow it ran."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from graduate.adapters.base import InstanceState, InstanceStatus
from graduate.check import Verdict, judge_instance
from graduate.errors import FlowError, InputError
from graduate.flow import (
    Flow,
    InstanceRequest,
    Parallel,
    Step,
    declared_name,
    flow_from_dict,
    flow_to_dict,
    load_flow,
)
from graduate.ledger import EffectRecord, InstanceRecord, Ledger, Outcome
from graduate.runner import input_values, parse_inputs

DD_ROOM = Path(__file__).resolve().parents[2] / "spikes" / "dd_room.toml"
THREE = (("parties", ("acme", "bidco", "counsel")),)


@pytest.fixture
def dd_room() -> Flow:
    return load_flow(DD_ROOM)


def request(given: tuple[tuple[str, tuple[str, ...]], ...] = THREE) -> InstanceRequest:
    return InstanceRequest("i1", "r", "t", "e", "20250101", "corr", "trace", given)


def test_a_for_each_step_becomes_a_group_named_after_it_with_a_branch_per_item(
        dd_room: Flow) -> None:
    flow = dd_room.for_instance(THREE)

    [group] = flow.groups
    assert group.name == "grant_access"
    assert [b.name for b in group.branches] == ["acme", "bidco", "counsel"]
    assert [s.name for s in group.steps] == [
        "grant_access[acme]", "grant_access[bidco]", "grant_access[counsel]"]
    assert {(s.effect, s.compensation, s.for_each) for s in group.steps} == {
        ("access.grant", "access.revoke", None)}
    assert [n.name for n in flow.nodes] == [n.name for n in dd_room.nodes]
    assert dd_room.for_instance(THREE) is flow  # the same input, the same flow
    assert flow.for_instance(THREE) is flow  # expanded once: nothing left to expand
    assert dd_room.for_instance(request()) == flow


def test_without_input_an_instance_runs_for_the_defaults(dd_room: Flow) -> None:
    flow = dd_room.for_instance(())
    assert [s.name for s in flow.steps if declared_name(s.name) == "grant_access"] == [
        "grant_access[buyer]", "grant_access[counsel]"]
    assert dd_room.input_for({}) == (("parties", ("buyer", "counsel")),)


def test_each_item_has_its_own_key_and_compensation_key(dd_room: Flow) -> None:
    flow = dd_room.for_instance(THREE)
    keys = {flow.key_for(f"grant_access[{p}]", request()) for p in ("acme", "bidco")}
    assert keys == {"t:dd_room:e:20250101:grant_access[acme]",
                    "t:dd_room:e:20250101:grant_access[bidco]"}
    assert flow.key_for("grant_access[acme]", request(), compensation=True) == (
        "t:dd_room:e:20250101:grant_access[acme].compensation")


def test_compensations_undo_each_granted_party_in_reverse(dd_room: Flow) -> None:
    flow = dd_room.for_instance(THREE)
    done = ["provision_storage", "register_room", "nda", "grant_access[bidco]",
            "grant_access[acme]", "grant_access", "track_requests"]
    assert [s.name for s in flow.compensations_for(done)] == [
        "track_requests", "grant_access[acme]", "grant_access[bidco]", "register_room",
        "provision_storage"]
    assert flow.before("track_requests")[-3:] == (
        "grant_access[acme]", "grant_access[bidco]", "grant_access[counsel]")
    assert set(flow.beside("grant_access[acme]")) == {"grant_access[bidco]",
                                                      "grant_access[counsel]"}


def test_the_definition_keeps_for_each_and_inputs_through_its_json_form(
        dd_room: Flow) -> None:
    data = flow_to_dict(dd_room)
    assert data["input"] == {"parties": ["buyer", "counsel"]}
    assert flow_from_dict(data).inputs == dd_room.inputs
    assert flow_from_dict(data).node("grant_access") == dd_room.node("grant_access")


def test_a_request_read_back_from_json_is_hashable_and_equal() -> None:
    listed = InstanceRequest("i1", "r", "t", "e", "20250101", "corr", "trace",
                             [["parties", ["acme", "bidco", "counsel"]]])  # type: ignore[arg-type]
    assert listed == request()
    assert hash(listed) == hash(request())


@pytest.mark.parametrize(("given", "fix"), [
    ({"people": ("a",)}, ["takes no input people", "its inputs: parties"]),
    ({"parties": ()}, ["at least one item"]),
    ({"parties": ("Acme",)}, ["item 'Acme'", "lower-case letters"]),
    ({"parties": ("a:b",)}, ["item 'a:b'"]),
    ({"parties": ("a[b]",)}, ["item 'a[b]'"]),
    ({"parties": ("acme", "acme")}, ["acme given twice"]),
])
def test_an_input_that_does_not_fit_is_refused_saying_what_to_fix(
        dd_room: Flow, given: dict[str, tuple[str, ...]], fix: list[str]) -> None:
    with pytest.raises(InputError) as raised:
        dd_room.input_for(given)
    assert all(part in str(raised.value) for part in fix), str(raised.value)


def test_a_flow_without_inputs_refuses_any(sample_flow: Flow) -> None:
    with pytest.raises(InputError, match="declares none"):
        sample_flow.input_for({"parties": ("a",)})
    assert sample_flow.for_instance(request(())) is sample_flow


@pytest.mark.parametrize(("text", "fix"), [
    ("parties", "NAME=ITEM,ITEM"),
    ("parties=", "NAME=ITEM,ITEM"),
    ("=acme", "NAME=ITEM,ITEM"),
    ("parties=a,,b", "empty item"),
])
def test_a_malformed_input_option_is_refused(text: str, fix: str) -> None:
    with pytest.raises(InputError, match=fix):
        parse_inputs([text])


def test_an_input_option_reads_its_items() -> None:
    assert parse_inputs(["parties=acme, bidco"]) == {"parties": ("acme", "bidco")}
    with pytest.raises(InputError, match="given twice"):
        parse_inputs(["parties=a", "parties=b"])


DEFINITION = DD_ROOM.read_text(encoding="utf-8")


@pytest.mark.parametrize(("edit", "fix"), [
    (('for_each = "parties"', 'for_each = "people"'),
     ["for_each = 'people' names no input", "[input]"]),
    (('parties = ["buyer", "counsel"]', 'parties = "buyer"'), ["must be a list of item"]),
    (('parties = ["buyer", "counsel"]', 'parties = ["Buyer"]'), ["item 'Buyer'"]),
    (('parties = ["buyer", "counsel"]', 'parties = []'), ["at least one item"]),
    (('parties = ["buyer", "counsel"]', 'parties = ["buyer"]\nfirms = ["x"]'),
     ["[input] firms", "no step runs for its items"]),
    (('"{tenant_id}:{flow}:{entity_id}:{date}:{step}"', '"{tenant_id}:{flow}:{entity_id}"'),
     ["grant_access run once per item", "add {step}"]),
])
def test_a_definition_with_a_bad_input_or_for_each_is_refused(
        tmp_path: Path, edit: tuple[str, str], fix: list[str]) -> None:
    assert edit[0] in DEFINITION
    path = tmp_path / "dd_room.toml"
    path.write_text(DEFINITION.replace(edit[0], edit[1], 1), encoding="utf-8")
    with pytest.raises(FlowError) as raised:
        load_flow(path)
    assert all(part in str(raised.value) for part in fix), str(raised.value)


def test_a_for_each_step_inside_a_group_is_refused(tmp_path: Path) -> None:
    text = DEFINITION.replace('''[[nodes]]
step = "track_requests"''', '''[[nodes]]
parallel = "follow_up"

[[nodes.steps]]
step = "notify_parties"
effect = "requests.notify"
for_each = "parties"

[[nodes.steps]]
step = "track_requests"''', 1)
    path = tmp_path / "dd_room.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlowError, match="outside the group"):
        load_flow(path)


def test_the_ledger_records_each_instances_input(ledger: Ledger, dd_room: Flow) -> None:
    ledger.register(dd_room, request(), "temporal")
    assert ledger.instance("i1").input == THREE
    assert ledger.instance("i1").request == request()


def test_a_ledger_written_before_inputs_reads_its_instances_as_the_defaults(
        tmp_path: Path, dd_room: Flow) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the instances table as graduate wrote it before
        db.execute("""CREATE TABLE instances (
            instance_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, flow TEXT NOT NULL,
            flow_source TEXT NOT NULL, engine TEXT NOT NULL, tenant_id TEXT NOT NULL,
            entity_id TEXT NOT NULL, date TEXT NOT NULL, correlation_id TEXT NOT NULL,
            trace_id TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL)""")
        db.execute("INSERT INTO instances VALUES ('old', 'r', 'dd_room', '', 'temporal', "
                   "'t', 'e', '20250101', 'c', 'x', 1.0)")
    ledger = Ledger(str(path))
    try:
        record = ledger.instance("old")
        assert record.input == ()
        assert [s.name for s in dd_room.for_instance(record.request).steps
                if s.name.startswith("grant_access")] == [
            "grant_access[buyer]", "grant_access[counsel]"]
    finally:
        ledger.close()


def test_a_point_armed_at_a_for_each_step_is_reached_by_an_expansion(
        ledger: Ledger, dd_room: Flow) -> None:
    ledger.register(dd_room, request(), "temporal")
    ledger.arm("i1", "grant_access", "before-effect")
    paused = threading.Thread(target=ledger.pause_at,
                              args=("i1", "grant_access[bidco]", "before-effect"))
    paused.start()
    deadline = time.monotonic() + 10
    while (reached := ledger.reached("i1", "grant_access", "before-effect")) is None:
        assert time.monotonic() < deadline, "the expansion never reached the point"
        time.sleep(0.01)
    assert ledger.release("i1", "grant_access", "before-effect")
    paused.join(timeout=10)
    assert not paused.is_alive()
    assert (reached.step, reached.expansion) == ("grant_access", "grant_access[bidco]")
    # Reached once: the next party passes the point.
    ledger.pause_at("i1", "grant_access[acme]", "before-effect")


def _effect(step: str, at: float, kind: str = "effect") -> EffectRecord:
    flow = load_flow(DD_ROOM).for_instance(THREE)
    node = flow.node(step)
    assert isinstance(node, Step)
    return EffectRecord(
        id=0, run_id="r", flow="dd_room", instance_id="i1", step=step,
        effect=node.effect if kind == "effect" else str(node.compensation),
        kind=kind,  # type: ignore[arg-type]
        attempt=1, idempotency_key=flow.key_for(step, request(),
                                                compensation=kind == "compensation"),
        correlation_id="corr", trace_id="trace", engine="temporal", worker_pid=7,
        started_at=at, finished_at=at + 0.01, outcome=Outcome.APPLIED)


RECORD = InstanceRecord(instance_id="i1", run_id="r", flow="dd_room", flow_source="",
                        engine="temporal", tenant_id="t", entity_id="e", date="20250101",
                        correlation_id="corr", trace_id="trace", started_at=0.0,
                        input=THREE)
FORWARD = ["provision_storage", "register_room", "grant_access[acme]",
           "grant_access[counsel]", "grant_access[bidco]", "track_requests", "close_room"]
DONE = ("provision_storage", "register_room", "nda", "grant_access[acme]",
        "grant_access[bidco]", "grant_access[counsel]", "grant_access", "track_requests",
        "diligence", "close_room")


def test_the_checker_judges_an_instance_on_the_parties_it_was_given(dd_room: Flow) -> None:
    effects = [_effect(step, n) for n, step in enumerate(FORWARD)]
    status = InstanceStatus(InstanceState.COMPLETED, DONE, finished_at=20.0)

    judged = judge_instance(dd_room, RECORD, effects, status, engine_holds=False)

    assert judged.verdict is Verdict.COMPLETED, judged.reason
    assert judged.input == {"parties": ("acme", "bidco", "counsel")}
    assert {e.step for e in judged.effects} >= {
        "grant_access[acme]", "grant_access[bidco]", "grant_access[counsel]"}


def test_the_checker_sees_a_party_never_granted(dd_room: Flow) -> None:
    effects = [_effect(step, n) for n, step in enumerate(FORWARD)
               if step != "grant_access[bidco]"]
    status = InstanceStatus(InstanceState.COMPLETED, DONE, finished_at=20.0)

    judged = judge_instance(dd_room, RECORD, effects, status, engine_holds=False)

    assert judged.verdict is not Verdict.COMPLETED
    assert "grant_access[bidco]" in judged.reason


def test_the_checker_sees_a_granted_party_not_revoked(dd_room: Flow) -> None:
    forward = FORWARD[:-1]
    undo = ["track_requests", "grant_access[bidco]", "grant_access[acme]", "register_room",
            "provision_storage"]  # counsel's access left in place
    effects = [_effect(step, n) for n, step in enumerate(forward)] + [
        _effect(step, 10 + n, "compensation") for n, step in enumerate(undo)]
    status = InstanceStatus(InstanceState.COMPENSATED, DONE[:-2], finished_at=20.0,
                            detail="rejected at diligence")

    judged = judge_instance(dd_room, RECORD, effects, status, engine_holds=False)

    assert judged.verdict is not Verdict.COMPENSATED
    assert "grant_access[counsel]" in judged.reason


def test_a_group_of_expansions_is_a_parallel_group(dd_room: Flow) -> None:
    assert isinstance(dd_room.for_instance(THREE).node("grant_access"), Parallel)


@pytest.mark.parametrize("given", [{"parties": ["acme", 5]}, {"parties": 5},
                                   {"parties": None}])
def test_inputs_through_the_library_that_are_no_list_of_names_are_refused_saying_so(
        given: dict[str, object]) -> None:
    with pytest.raises(InputError, match="must be a list of names, for example"):
        input_values(given)  # type: ignore[arg-type]


def test_inputs_through_the_library_read_as_the_cli_reads_them() -> None:
    assert input_values({"parties": ["acme", "bidco"]}) == {"parties": ("acme", "bidco")}
    assert input_values({"parties": "acme, bidco"}) == {"parties": ("acme", "bidco")}
