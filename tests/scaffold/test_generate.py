"""`graduate scaffold`: the package it writes passes mypy strict and ruff, for the spikes,
for a flow `graduate inventory` wrote, for a flow with every kind of node, and for one
whose steps work long; and it never overwrites a file someone edited unless forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graduate.cli.app import app
from graduate.flow import load_flow, write_flow_json
from graduate.migrate.scaffold import MANIFEST
from tests.migrate.conftest import ACME
from tests.scaffold.conftest import ROOT, tool

PMI = ROOT / "spikes" / "pmi_milestones.toml"

runner = CliRunner()

# Every kind of node and action: a timer, a wait that fails on rejection and goes on at
# its deadline, a wait that compensates, an effect two steps share, a key with the
# instance, and a long name.
EVERY_NODE = """
[flow]
name = "quarterly_vendor_contract_renewal_with_two_approvals"
approval_class = "A3"
reversibility_class = "R3"
sensitivity_class = "S3"
idempotency_key = "{tenant_id}:{instance_id}:{step}"

[systems.crm]
honours_idempotency = true

[systems.mail]
honours_idempotency = false

[[nodes]]
step = "draft"
effect = "crm.write"
timeout = "5s"

[[nodes]]
wait = "legal_review"
deadline = "2h"
on_timeout = "continue"
on_reject = "fail"

[[nodes]]
timer = "cooling_off"
duration = "1m"

[[nodes]]
wait = "board"
signal = "board_decision"
deadline = "3d"

[[nodes]]
step = "countersign"
effect = "crm.write"
retry = { max_attempts = 1 }

[[nodes]]
step = "announce"
effect = "mail.send"

[compensations]
draft = "crm.delete"
countersign = "crm.delete"
"""

# Steps with long work, one in a parallel group whose other branch has two steps.
WORK = """
[flow]
name = "nightly_statements"
approval_class = "A0"
reversibility_class = "R1"
sensitivity_class = "S2"

[systems.ledger]
honours_idempotency = true

[systems.mail]
honours_idempotency = false

[[nodes]]
step = "compute_statements"
effect = "ledger.compute_statements"
timeout = "5m"
work = "90s"

[[nodes]]
parallel = "deliver"

  [[nodes.steps]]
  step = "render_pdfs"
  effect = "ledger.render_pdfs"
  timeout = "2m"
  work = "40s"

  [[nodes.steps]]
  step = "archive"
  branch = "records"
  effect = "ledger.archive"

  [[nodes.steps]]
  step = "mail_summary"
  branch = "records"
  effect = "mail.send_summary"

[compensations]
compute_statements = "ledger.discard_statements"
archive = "ledger.unarchive"
"""


# Every kind of node under an interrupt without a notice: a timer the interrupt ends early,
# waits without a reminder or an escalation.
INTERRUPTED_EVERY_NODE = '[interrupt]\nsignal = "withdrawn"\n\n' + EVERY_NODE


def _escalated_signature() -> str:
    """The signature spike's wait with an escalation after its reminder."""
    spike = (ROOT / "spikes" / "signature.toml").read_text(encoding="utf-8")
    return spike.replace('deadline = "5d"', 'deadline = "5d"\nescalation = '
                         '{ after = "4d", effect = "esign.escalate_signer" }', 1)


def _flows(tmp_path: Path) -> dict[str, Path]:
    inventoried = tmp_path / "inventoried.toml"
    written = runner.invoke(app, ["inventory", str(ACME), "--flow", "create_crm_draft",
                                  "--out", str(inventoried)])
    assert written.exit_code == 0, written.output
    every = tmp_path / "every_node.toml"
    every.write_text(EVERY_NODE, encoding="utf-8")
    work = tmp_path / "work.toml"
    work.write_text(WORK, encoding="utf-8")
    parallel = tmp_path / "pmi_milestones.json"
    write_flow_json(load_flow(PMI), parallel)
    interrupted = tmp_path / "interrupted.toml"
    interrupted.write_text(INTERRUPTED_EVERY_NODE, encoding="utf-8")
    escalated = tmp_path / "escalated.toml"
    escalated.write_text(_escalated_signature(), encoding="utf-8")
    return {"spike": ROOT / "spikes" / "partner_approval.toml", "inventory": inventoried,
            "every-node": every, "parallel": parallel,
            "branches": ROOT / "tests" / "flows" / "branches.toml", "work": work,
            "reminder": ROOT / "spikes" / "signature.toml", "escalation": escalated,
            "interrupt": interrupted,
            "example": ROOT / "examples" / "partner_approval_app" / "flow.toml"}


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for every package this module checks: a cold cache made each run
    read temporalio's and graduate's types again, about 8 CPU-seconds of the 9.
    Incremental mode checks each package itself in full."""
    return tmp_path_factory.mktemp("mypy-cache")


# On one xdist worker, one after another, so that only the first run fills the cache
# (each worker has its own temporary folders, and so its own cache).
@pytest.mark.xdist_group("scaffold-mypy")
@pytest.mark.parametrize("which", ["spike", "inventory", "every-node", "parallel", "branches",
                                   "work", "reminder", "escalation", "interrupt", "example"])
def test_the_package_passes_mypy_strict_and_ruff(which: str, tmp_path: Path,
                                                 mypy_cache: Path) -> None:
    flow = _flows(tmp_path)[which]
    out = tmp_path / "package"

    result = runner.invoke(app, ["scaffold", str(flow), "--out", str(out)])

    assert result.exit_code == 0, result.output
    package = f"{load_flow(flow).name}_temporal"
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        f"{package}/__init__.py", f"{package}/workflow.py", f"{package}/activities.py",
        f"{package}/systems.py", f"{package}/worker.py", f"tests/test_{package}.py",
        "pyproject.toml", f"flows/{load_flow(flow).name}.toml", MANIFEST}
    ruff = tool(out, ["ruff", "check", "--no-cache", "."], timeout=120)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    mypy = tool(out, ["mypy", "--cache-dir", str(mypy_cache)], timeout=300)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    assert "Success: no issues found in 6 source files" in mypy.stdout


def test_the_app_it_declares_loads_and_its_effects_name_the_flow(tmp_path: Path) -> None:
    from graduate.apps import check_app, find_app

    out = tmp_path / "package"
    assert runner.invoke(app, ["scaffold", str(_flows(tmp_path)["every-node"]),
                               "--out", str(out)]).exit_code == 0

    declared = find_app(out, "quarterly_vendor_contract_renewal_with_two_approvals_temporal")

    check_app(declared)  # imports the package: factory, start, every graduate.effect name
    assert declared.flow.name == "quarterly_vendor_contract_renewal_with_two_approvals"
    assert set(declared.engines) == {"temporal"}
    activities = (out / "quarterly_vendor_contract_renewal_with_two_approvals_temporal"
                  / "activities.py").read_text(encoding="utf-8")
    # Two steps share crm.write (and crm.delete): each gets an activity name of its own.
    for name in ("crm.write@draft", "crm.write@countersign", "crm.delete@draft",
                 "crm.delete@countersign", "mail.send"):
        assert f'@activity.defn(name="{name}")' in activities


def test_regenerating_rewrites_only_what_is_as_generated(tmp_path: Path) -> None:
    flow = _flows(tmp_path)["spike"]
    out = tmp_path / "package"
    assert runner.invoke(app, ["scaffold", str(flow), "--out", str(out)]).exit_code == 0
    systems = out / "partner_approval_temporal" / "systems.py"
    workflow = out / "partner_approval_temporal" / "workflow.py"
    generated = workflow.read_text(encoding="utf-8")

    again = runner.invoke(app, ["scaffold", str(flow), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "8 file(s) already as generated" in again.stdout

    edited = systems.read_text(encoding="utf-8") + "\nCLIENT = 'ours'\n"
    systems.write_text(edited, encoding="utf-8")
    workflow.write_text(generated.replace("10.0", "20.0"), encoding="utf-8")
    refused = runner.invoke(app, ["scaffold", str(flow), "--out", str(out)])

    assert refused.exit_code == 2
    assert "partner_approval_temporal/systems.py" in refused.stderr
    assert "partner_approval_temporal/workflow.py" in refused.stderr
    assert "--force" in refused.stderr
    assert systems.read_text(encoding="utf-8") == edited  # nothing was written

    forced = runner.invoke(app, ["scaffold", str(flow), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert workflow.read_text(encoding="utf-8") == generated
    assert "CLIENT" not in systems.read_text(encoding="utf-8")
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["flow"] == "partner_approval"


def test_a_file_it_did_not_write_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "package"
    (out / "tests").mkdir(parents=True)
    (out / "pyproject.toml").write_text("[project]\nname = 'ours'\n", encoding="utf-8")

    refused = runner.invoke(app, ["scaffold", "partner_approval", "--out", str(out)])

    assert refused.exit_code == 2
    assert "pyproject.toml" in refused.stderr
    assert not (out / "partner_approval_temporal").exists()


def test_an_unknown_flow_is_refused(tmp_path: Path) -> None:
    refused = runner.invoke(app, ["scaffold", "no_such_flow", "--out", str(tmp_path / "x")])

    assert refused.exit_code == 2
    assert "no flow 'no_such_flow'" in refused.stderr
    assert not (tmp_path / "x").exists()


def test_each_branch_is_a_task_of_its_steps_in_order_and_the_group_joins(
        tmp_path: Path) -> None:
    from graduate.migrate.scaffold import render

    files = render(load_flow(ROOT / "tests" / "flows" / "branches.toml"))
    workflow = files["branches_temporal/workflow.py"]

    # One task per branch, the portal's two steps in one branch in the flow's order,
    # awaited together (not gather: the branches must outlive a cancelled join).
    group = workflow[workflow.index("await self._parallel("):]
    group = group[:group.index("])") + 2]
    assert [line.strip() for line in group.splitlines() if "# branch" in line] == [
        "[  # branch portal", "[  # branch open_account", "[  # branch welcome"]
    assert group.index('_Call("open_portal"') < group.index('_Call("grant_access"')
    assert "asyncio.create_task(self._branch(" in workflow
    assert "await workflow.wait(tasks)" in workflow
    assert "asyncio.gather" not in workflow
    assert workflow.index("await self._parallel(") < workflow.index('"activate"')
    assert "does not render yet" not in workflow


def test_a_step_with_work_heartbeats_within_its_heartbeat_timeout(tmp_path: Path) -> None:
    from graduate.migrate.scaffold import WORK_HEARTBEAT_TIMEOUT, render

    work = tmp_path / "work.toml"
    work.write_text(WORK, encoding="utf-8")
    files = render(load_flow(work))
    workflow = files["nightly_statements_temporal/workflow.py"]
    activities = files["nightly_statements_temporal/activities.py"]

    options = {name: workflow[workflow.index(f"\n{name.upper()} = StepOptions("):]
               .split("\n)\n")[0] for name in ("compute_statements", "render_pdfs",
                                               "archive", "mail_summary")}
    beat = f"heartbeat=timedelta(seconds={WORK_HEARTBEAT_TIMEOUT!r})"
    assert beat in options["compute_statements"]
    assert beat in options["render_pdfs"]
    assert "heartbeat=" not in options["archive"] + options["mail_summary"]
    assert "heartbeat_timeout=options.heartbeat" in workflow
    # The work's activities heartbeat through the call, at a third of the timeout; the
    # others (and every compensation) do not.
    bodies = {chunk.split("(")[0]: chunk for chunk in activities.split("\ndef ")[1:]}
    assert "with heartbeating()" in bodies["compute_statements"]
    assert "with heartbeating()" in bodies["render_pdfs"]
    for name in ("archive", "mail_summary", "compensate_compute_statements",
                 "compensate_archive"):
        assert "heartbeating" not in bodies[name]
    assert "timeout.total_seconds() / 3" in bodies["heartbeating"]


def test_a_flow_from_python_is_written_as_toml_that_loads_back(tmp_path: Path) -> None:
    from dataclasses import replace

    from graduate.migrate.scaffold import render

    every = tmp_path / "every_node.toml"
    every.write_text(EVERY_NODE, encoding="utf-8")
    work = tmp_path / "work.toml"
    work.write_text(WORK, encoding="utf-8")
    for loaded in (load_flow(every), load_flow(work), load_flow(PMI)):
        flow = replace(loaded, source="myflows:FLOW")  # as module:ATTRIBUTE gives it

        written = tmp_path / "written.toml"
        written.write_text(render(flow)[f"flows/{flow.name}.toml"], encoding="utf-8")

        assert replace(load_flow(written), source="") == replace(flow, source="")


def test_a_reminder_is_a_timer_racing_the_signal_sent_once_under_its_own_step(
        tmp_path: Path) -> None:
    from graduate.migrate.scaffold import render

    files = render(load_flow(ROOT / "spikes" / "signature.toml"))
    workflow = files["signature_temporal/workflow.py"]
    activities = files["signature_temporal/activities.py"]
    systems = files["signature_temporal/systems.py"]

    # The wait hands its reminder to _decision: the reminder's step, activity, one
    # attempt, due half-way.
    body = workflow[workflow.index("async def _flow"):workflow.index("async def _step")]
    assert ('_WhileOpen("signed.reminder", activities.signed_reminder,\n'
            '                       SIGNED_REMINDER, at=0.5))') in body
    options = workflow[workflow.index("\nSIGNED_REMINDER = StepOptions("):].split("\n)\n")[0]
    assert "retry=RetryPolicy(maximum_attempts=1)" in options
    # A durable timer, as a task racing the signal's wait_condition; the activity only
    # when the decision has not come, keyed by the send's step; a timer not yet fired is
    # cancelled when the wait ends, an activity under way is awaited.
    decision = workflow[workflow.index("async def _decision"):
                        workflow.index("async def _send_while_open")]
    assert decision.index("asyncio.create_task(") < decision.index("wait_condition(")
    assert "await self._end_send(send, task)" in decision.split("finally:")[1]
    send = workflow[workflow.index("async def _send_while_open"):
                    workflow.index("async def _end_send")]
    assert send.index("await workflow.sleep(deadline * send.at)") < send.index(
        "if signal in self._state.decisions:\n            return") < send.index(
        "execute_activity(send.activity")
    assert "request.key(send.step)" in send
    end = workflow[workflow.index("async def _end_send"):
                   workflow.index("async def _compensate")]
    assert ("if not task.done() and send.step not in self._state.sending:\n"
            "            task.cancel()") in end
    assert "await workflow.wait([task])" in end
    # Its activity is named after its effect and records its call as the reminder's step.
    reminder = activities[activities.index('@activity.defn(name="esign.remind_signer")'):]
    assert reminder.index('graduate.effect("esign.remind_signer"') < reminder.index(
        'step="signed.reminder"') < reminder.index("systems.esign_remind_signer(")
    assert "    signed_reminder,\n" in activities[activities.index("ALL = ["):]
    assert "def esign_remind_signer(entity_id: str, key: str) -> None:" in systems
    # A flow with no reminder renders none of it.
    plain = render(load_flow(ROOT / "spikes" / "partner_approval.toml"))
    assert "_WhileOpen" not in plain["partner_approval_temporal/workflow.py"]
    assert "contextlib" not in plain["partner_approval_temporal/workflow.py"]


def test_an_escalation_is_a_timer_racing_the_signal_sent_once_under_its_own_step(
        tmp_path: Path) -> None:
    from graduate.migrate.scaffold import render

    files = render(load_flow(PMI))
    workflow = files["pmi_milestones_temporal/workflow.py"]
    activities = files["pmi_milestones_temporal/activities.py"]
    systems = files["pmi_milestones_temporal/systems.py"]

    # Each sign-off hands its escalation to _decision, due at its share of the hard
    # deadline (2w of 4w, 6w of 8w), so that it follows the deadline an instance is given.
    body = workflow[workflow.index("async def _flow"):workflow.index("async def _step")]
    assert ('_WhileOpen("day_one_review.escalation", activities.day_one_review_escalation,\n'
            '                       DAY_ONE_REVIEW_ESCALATION, at=0.5))') in body
    assert ('_WhileOpen("final_review.escalation", activities.final_review_escalation,\n'
            '                       FINAL_REVIEW_ESCALATION, at=0.75))') in body
    # A share with no short decimal (1w of 3w) is written as the fraction it is, and a
    # call too long for one line takes its deadline on the next.
    assert ('            request, "invoicing_signoff",\n'
            '            timedelta(seconds=request.invoicing_review_deadline_seconds),\n'
            '            _WhileOpen("invoicing_review.escalation",') in body
    assert "INVOICING_REVIEW_ESCALATION, at=1 / 3))" in body
    # One attempt; the timer races the signal like the reminder's (same code: see above),
    # and the wait stays open after it, until its decision or deadline.
    options = workflow[workflow.index("\nDAY_ONE_REVIEW_ESCALATION = StepOptions("):]
    assert "retry=RetryPolicy(maximum_attempts=1)" in options.split("\n)\n")[0]
    send = workflow[workflow.index("async def _send_while_open"):
                    workflow.index("async def _end_send")]
    assert "return" not in send.split("execute_activity(")[1]
    # Its activity is named after its effect and records its call as the escalation's step.
    escalation = activities[activities.index('@activity.defn(name="notify.escalate_day_one")'):]
    assert escalation.index('graduate.effect("notify.escalate_day_one"') < escalation.index(
        'step="day_one_review.escalation"') < escalation.index(
        "systems.notify_escalate_day_one(")
    assert "    day_one_review_escalation,\n" in activities[activities.index("ALL = ["):]
    assert "def notify_escalate_day_one(entity_id: str, key: str) -> None:" in systems
    # A wait with a reminder and an escalation sends both, the reminder first, each its own.
    both = render(load_flow(_write(tmp_path / "escalated.toml", _escalated_signature())))
    body = both["signature_temporal/workflow.py"]
    assert ('_WhileOpen("signed.reminder", activities.signed_reminder,\n'
            '                       SIGNED_REMINDER, at=0.5),\n'
            '            _WhileOpen("signed.escalation", activities.signed_escalation,\n'
            '                       SIGNED_ESCALATION, at=0.8))') in body


def test_the_interrupt_is_a_flag_checked_before_each_node_then_compensates_and_notifies(
        tmp_path: Path) -> None:
    from graduate.migrate.scaffold import render

    files = render(load_flow(PMI))
    workflow = files["pmi_milestones_temporal/workflow.py"]
    activities = files["pmi_milestones_temporal/activities.py"]

    # The signal's handler only records it.
    handler = workflow[workflow.index('@workflow.signal(name="board_cancellation")'):]
    assert handler.split("\n\n")[0].endswith("self._state.interrupted = True")
    # Checked before each step starts its activity (a step in flight finishes), before
    # and after each wait (whose condition it ends), and once the last node is done.
    step = workflow[workflow.index("async def _step"):workflow.index("async def _parallel")]
    assert step.index("self._go_on()") < step.index("workflow.start_activity(")
    decision = workflow[workflow.index("async def _decision"):
                        workflow.index("async def _send_while_open")]
    assert decision.index("self._go_on()") < decision.index("wait_condition(") < decision.rindex(
        "self._go_on()")
    assert "lambda: signal in self._state.decisions or self._state.interrupted" in decision
    send = workflow[workflow.index("async def _send_while_open"):
                    workflow.index("async def _end_send")]
    assert "if signal in self._state.decisions or self._state.interrupted:" in send
    body = workflow[workflow.index("async def _flow"):workflow.index("async def _step")]
    assert body.rindex("self._go_on()") < body.index('return "completed"')
    go_on = workflow[workflow.index("def _go_on"):workflow.index("async def _end_interrupted")]
    assert "if self._state.interrupted:\n            raise _Interrupted" in go_on
    # run ends it: every completed step compensated in reverse, then the notice, once,
    # as its own step; the instance ends compensated, saying which signal ended it.
    run = workflow[workflow.index("async def run"):workflow.index("async def _flow")]
    assert run.index("except _Interrupted:") < run.index("except ActivityError:")
    end = workflow[workflow.index("async def _end_interrupted"):]
    end = end[:end.index("\n\n")]
    assert end.index("await self._compensate(request)") < end.index(
        'await self._notice(request, "interrupt.notice",') < end.index(
        'return "interrupted by board_cancellation: compensated"')
    assert "activities.interrupt_notice, INTERRUPT_NOTICE)" in end
    options = workflow[workflow.index("\nINTERRUPT_NOTICE = StepOptions("):].split("\n)\n")[0]
    assert "maximum_attempts=5" in options  # retried: it must land
    notice = activities[activities.index('@activity.defn(name="notify.announce_cancellation")'):]
    assert 'step="interrupt.notice"' in notice
    # A timer under an interrupt is ended early by it; without a notice none is sent.
    every = render(load_flow(_write(tmp_path / "interrupted.toml", INTERRUPTED_EVERY_NODE)))
    timed = every["quarterly_vendor_contract_renewal_with_two_approvals_temporal/workflow.py"]
    assert "await self._sleep(timedelta(seconds=60.0))  # cooling_off" in timed
    assert "wait_condition(lambda: self._state.interrupted, timeout=duration)" in timed
    assert "interrupt.notice" not in timed
    assert 'return "interrupted by withdrawn: compensated"' in timed
    # A flow without an interrupt renders none of it.
    plain = render(load_flow(ROOT / "spikes" / "partner_approval.toml"))
    assert "interrupted" not in plain["partner_approval_temporal/workflow.py"]
    assert "_go_on" not in plain["partner_approval_temporal/workflow.py"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
