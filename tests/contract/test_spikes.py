"""The contract on every spike in spikes/, on every engine: what the definition says is
what runs. Every wait approved, each forward effect lands once, in the flow's order; a
wait rejected or past its deadline takes the action the spike gives it, compensating
the steps done before it in reverse, each with its own compensation, and then sends the
notice of that ending, when the wait declares one, exactly once; a wait left open past
its reminder's time or its escalation's due date sends each once, and stays open. A
spike's interrupt, sent while a step is in flight or at a wait, lets that step finish,
starts no further step, and compensates what applied in reverse, then sends its notice.
Steps of a parallel group may land in any order among themselves, never before a step
they follow.

Each test runs a copy of the spike under a unique name (its own task queue and Celery
queue), with the deadline of the wait under test shortened where the test needs it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.adapters import engine_names
from graduate.adapters.base import InstanceState
from graduate.config import Settings
from graduate.flow import Flow, Parallel, Step, Wait, WaitEnd, load_flow, write_flow_json
from graduate.ledger import EffectRecord, Ledger, Outcome
from graduate.runner import approve_all
from tests.contract.test_engines import assert_traced, effects, run

SPIKES = sorted((Path(__file__).resolve().parents[2] / "spikes").glob("*.toml"))
WAITS = [(spike, wait.name) for spike in SPIKES for wait in load_flow(spike).waits]
_copies = itertools.count(1)


def copy_of(spike: Path, folder: Path, *, deadline: tuple[str, float] | None = None) -> Path:
    """The spike under a name of its own; `deadline` = (wait, seconds) shortens one wait
    (its escalation moved with it)."""
    flow = load_flow(spike)
    nodes = tuple(node.with_deadline(deadline[1])
                  if deadline and isinstance(node, Wait) and node.name == deadline[0]
                  else node for node in flow.nodes)
    name = f"{flow.name}_{next(_copies)}_{os.getpid()}"
    path = folder / f"{name}.json"
    write_flow_json(replace(flow, name=name, nodes=nodes), path)
    return path


def steps_before(flow: Flow, wait: str) -> list[Step]:
    """The steps an instance has done when it reaches `wait` (or a parallel group: its
    first step, a `for_each` step's expansions)."""
    done: list[Step] = []
    begins = {g.name: g.steps[0].name for g in flow.groups}
    for node in flow.flat_nodes:
        if node.name in (wait, begins.get(wait)):
            return done
        if isinstance(node, Step):
            done.append(node)
    raise AssertionError(f"{flow.name} has no wait {wait!r}")


def assert_in_flow_order(flow: Flow, landed: list[str], expected: list[Step]) -> None:
    """`landed` holds each expected step once, none before a step it follows."""
    assert sorted(landed) == sorted(s.name for s in expected)
    for at, name in enumerate(landed):
        assert set(flow.before(name)) <= set(landed[:at]), f"{name} landed too early"


def split_notices(rows: list[EffectRecord], flow: Flow) -> tuple[list[EffectRecord],
                                                                   list[EffectRecord]]:
    """The rows of the flow's steps, and those of its waits' notices."""
    notices = {s.name for w in flow.waits for s in w.notice_steps}
    return ([e for e in rows if e.step not in notices],
            [e for e in rows if e.step in notices])


def assert_one_notice_after(wait: Wait, end: WaitEnd, notices: list[EffectRecord],
                            undo: list[EffectRecord]) -> None:
    """The notice of `end`, if `wait` declares one, sent exactly once, after every
    compensation landed; no other notice."""
    step = wait.notice_step(end)
    expected = [] if step is None else [(step.name, step.effect, Outcome.APPLIED)]
    assert [(e.step, e.effect, e.outcome) for e in notices] == expected
    if notices and undo:
        assert notices[0].started_at >= max(e.finished_at for e in undo), (
            "the notice went out before the compensations had landed")


def assert_undone_in_reverse(flow: Flow, undo: list[EffectRecord], done: list[Step]) -> None:
    """Each compensable step undone once with its own compensation, none after a step it
    follows (the reverse of the flow's order)."""
    owed = {s.name: s.compensation for s in done if s.compensation}
    assert sorted((e.step, e.effect) for e in undo) == sorted(owed.items())
    order = [e.step for e in undo]
    for at, name in enumerate(order):
        assert not set(flow.before(name)) & set(order[:at]), f"{name} undone too late"


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize("spike", SPIKES, ids=[p.stem for p in SPIKES])
def test_every_wait_approved_applies_each_effect_once_in_order(
        settings: Settings, tmp_path: Path, spike: Path, engine: str) -> None:
    path = copy_of(spike, tmp_path)
    flow = load_flow(path).for_instance(())  # as an instance without input runs it

    result = run(settings, path, engine, decisions=approve_all(flow))

    [item] = result.instances
    assert item.state is InstanceState.COMPLETED, item.detail
    rows = effects(settings, item.instance_id)
    assert {(e.step, e.effect, e.outcome) for e in rows} == {
        (s.name, s.effect, Outcome.APPLIED) for s in flow.steps}
    assert_in_flow_order(flow, [e.step for e in rows], list(flow.steps))
    assert effects(settings, item.instance_id, "compensation") == []
    assert item.duplicates == 0
    assert_traced(settings, flow, result, engine)


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize(("spike", "wait"), WAITS, ids=[f"{s.stem}-{w}" for s, w in WAITS])
def test_a_rejected_wait_undoes_what_ran_before_it(
        settings: Settings, tmp_path: Path, spike: Path, wait: str, engine: str) -> None:
    path = copy_of(spike, tmp_path)
    flow = load_flow(path).for_instance(())  # as an instance without input runs it
    rejected = flow.node(wait)
    assert isinstance(rejected, Wait)
    assert rejected.on_reject == "compensate"

    result = run(settings, path, engine,
                 decisions={**approve_all(flow), rejected.signal: "reject"})

    [item] = result.instances
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert "rejected" in item.detail
    done = steps_before(flow, wait)
    rows, notices = split_notices(effects(settings, item.instance_id), flow)
    assert {e.outcome for e in rows} <= {Outcome.APPLIED}
    assert_in_flow_order(flow, [e.step for e in rows], done)
    undo = effects(settings, item.instance_id, "compensation")
    assert_undone_in_reverse(flow, undo, done)
    assert {e.outcome for e in undo} <= {Outcome.APPLIED}
    assert_one_notice_after(rejected, "rejected", notices, undo)
    assert_traced(settings, flow, result, engine)


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize(("spike", "wait"), WAITS, ids=[f"{s.stem}-{w}" for s, w in WAITS])
def test_a_wait_past_its_deadline_takes_the_spikes_timeout_action(
        settings: Settings, tmp_path: Path, spike: Path, wait: str, engine: str) -> None:
    path = copy_of(spike, tmp_path, deadline=(wait, 2.0))
    flow = load_flow(path).for_instance(())  # as an instance without input runs it
    lapsed = flow.node(wait)
    assert isinstance(lapsed, Wait)
    decisions = {k: v for k, v in approve_all(flow).items() if k != lapsed.signal}

    result = run(settings, path, engine, decisions=decisions)

    [item] = result.instances
    rows = effects(settings, item.instance_id)
    # The lapsed wait outlived its reminder's time and its escalation's due date: each
    # it declares was sent once while it waited, in the order of their times; the waits
    # answered at once sent none.
    while_open = {send.step.name for w in flow.waits for send in w.while_open}
    sent = [e for e in rows if e.step in while_open]
    rows, notices = split_notices([e for e in rows if e not in sent], flow)
    assert [(e.step, e.effect, e.outcome) for e in sent] == [
        (send.step.name, send.step.effect, Outcome.APPLIED)
        for send in sorted(lapsed.while_open, key=lambda send: send.after)]
    undo = effects(settings, item.instance_id, "compensation")
    # Each went out while the wait was still open: before the first call of its ending.
    if sent and (ending := [e.started_at for e in undo + notices]):
        assert max(e.finished_at for e in sent) <= min(ending)
    if lapsed.on_timeout == "continue":
        assert item.state is InstanceState.COMPLETED, item.detail
        assert_in_flow_order(flow, [e.step for e in rows], list(flow.steps))
        assert undo == []
        return
    done = steps_before(flow, wait)
    assert_in_flow_order(flow, [e.step for e in rows], done)
    assert "deadline" in item.detail
    if lapsed.on_timeout == "fail":  # left for a person to take up, nothing undone
        assert item.state is InstanceState.FAILED, item.detail
        assert undo == []
        return
    assert item.state is InstanceState.COMPENSATED, item.detail
    assert_undone_in_reverse(flow, undo, done)
    reached = max(e.finished_at for e in rows)
    assert undo[0].started_at - reached >= 2.0, "compensation ran before the deadline"
    assert_one_notice_after(lapsed, "expired", notices, undo)


def interrupt_points(spike: Path) -> list[str]:
    """Where a spike's interrupt is sent: while the first step after its first wait is
    in flight, and at its last wait, when the most has applied."""
    flow = load_flow(spike)
    if flow.interrupt is None or not flow.waits:
        return []
    order = [node.name for node in flow.flat_nodes]
    first_wait = flow.waits[0].name
    in_flight = next(s.name for s in flow.steps if order.index(s.name) > order.index(first_wait))
    return [in_flight, flow.waits[-1].name]


INTERRUPTS = [(spike, at) for spike in SPIKES for at in interrupt_points(spike)]


@pytest.mark.parametrize("engine", engine_names())
@pytest.mark.parametrize(("spike", "at"), INTERRUPTS, ids=[f"{s.stem}-{a}" for s, a in INTERRUPTS])
def test_the_spikes_interrupt_halts_it_and_undoes_what_applied_in_reverse(
        settings: Settings, tmp_path: Path, spike: Path, at: str, engine: str) -> None:
    path = copy_of(spike, tmp_path)
    flow = load_flow(path).for_instance(())  # as an instance without input runs it
    assert flow.interrupt is not None
    reached = flow.node(at)
    # The waits before `at` are answered at once; the one at `at` is left open for the
    # interrupt to find it waiting there.
    order = [node.name for node in flow.flat_nodes]
    # `at` may be a group (a `for_each` step's expansions): where its first step is.
    begins = next((g.steps[0].name for g in flow.groups if g.name == at), at)
    answered = {w.signal: "approve" for w in flow.waits
                if order.index(w.name) < order.index(begins)}

    result = run(settings, path, engine, decisions={**answered,
                                                   flow.interrupt.signal: "interrupt"},
                 interrupt_at=at)

    [item] = result.instances
    assert (item.state, item.detail) == (InstanceState.COMPENSATED, flow.interrupt.reason)
    # The step in flight finished; no further step started. At a `for_each` step (a
    # group of one step per item, all begun at once) the interrupt caught one of them in
    # flight (the ledger names which); its siblings may have begun before it came, and
    # each that began landed and is undone.
    done = steps_before(flow, at) + ([reached] if isinstance(reached, Step) else [])
    beside: set[str] = set()
    if isinstance(reached, Parallel):
        caught = Ledger(settings.ledger).reached(item.instance_id, at, "before-effect")
        assert caught is not None
        assert caught.expansion
        done.append(next(s for s in reached.steps if s.name == caught.expansion))
        beside = set(flow.beside(caught.expansion))
    notice = flow.interrupt.notice_step
    forward = effects(settings, item.instance_id)
    rows = [e for e in forward if notice is None or e.step != notice.name]
    assert {e.outcome for e in rows} <= {Outcome.APPLIED}
    done += [s for s in flow.steps if s.name in beside & {e.step for e in rows}]
    assert_in_flow_order(flow, [e.step for e in rows], done)
    undo = effects(settings, item.instance_id, "compensation")
    assert_undone_in_reverse(flow, undo, done)
    assert {e.outcome for e in undo} <= {Outcome.APPLIED}
    # Its notice, if it declares one, went once, last.
    sent = [e for e in forward if e not in rows]
    assert [(e.step, e.effect, e.outcome) for e in sent] == (
        [] if notice is None else [(notice.name, notice.effect, Outcome.APPLIED)])
    if sent and undo:
        assert sent[0].started_at >= max(e.finished_at for e in undo)
    assert item.duplicates == 0
    assert_traced(settings, flow, result, engine)
