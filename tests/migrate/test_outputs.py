"""The inventory's outputs: JSON read back, SARIF 2.1.0's shape, Markdown, the flow file
that `load_flow` accepts, and the `--fail-on` thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graduate.cli.app import app
from graduate.errors import ConfigError
from graduate.flow import Step, Timer, Wait, load_flow
from graduate.migrate.inventory import Inventory, inventory
from graduate.migrate.inventory.flowfile import flow_toml
from graduate.migrate.inventory.gate import check, failures
from graduate.migrate.inventory.jsonform import SCHEMA, to_json
from graduate.migrate.inventory.markdown import to_markdown
from graduate.migrate.inventory.sarif import to_sarif
from tests.migrate.conftest import ACME, Codebase


@pytest.fixture(scope="module")
def acme() -> Inventory:
    return inventory(ACME)


def test_json_holds_everything(acme: Inventory) -> None:
    data = json.loads(to_json(acme))
    assert data["schema"] == SCHEMA
    assert len(data["findings"]) == len(acme.findings)
    assert data["hazards"][0]["location"] == {"path": "approvals/tasks.py", "line": 36}
    assert [f["name"] for f in data["flows"]] == [f.name for f in acme.flows]
    assert data["flows"][0]["workflow_criteria"] == 4
    assert data["settings"]["visibility_timeout"] == "7200 s (acme/settings.py:8)"
    assert {s["reason"][:12] for s in data["skipped"]} >= {"syntax error"}


def test_sarif_has_the_shape_code_hosts_read(acme: Inventory) -> None:
    log = json.loads(to_sarif(acme, "0.1.0"))
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    rule_ids = [rule["id"] for rule in rules]
    assert len(rule_ids) == len(set(rule_ids))
    for rule in rules:
        assert rule["shortDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")
    hazards = [r for r in run["results"] if not r["ruleId"].startswith("flow-")]
    assert len(hazards) == len(acme.hazards)
    for result in run["results"]:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("/")
        assert physical["region"]["startLine"] >= 1
    eta = next(r for r in hazards if r["ruleId"] == "eta-beyond-visibility-timeout")
    assert eta["level"] == "error"
    assert eta["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "billing/tasks.py")
    assert eta["locations"][0]["physicalLocation"]["region"]["startLine"] == 30
    graduate = [r for r in run["results"] if r["ruleId"] == "flow-graduate"]
    assert len(graduate) == 2
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert len(notes) == len(acme.skipped)


def test_markdown_ranks_flows_and_lists_hazards(acme: Inventory) -> None:
    text = to_markdown(acme)
    assert "| 1 | `create_crm_draft` | graduate | long-lived-durable | 4/4 |" in text
    assert "`eta-beyond-visibility-timeout` at `billing/tasks.py:30`" in text
    assert "- `legacy/broken.py:6` syntax error" in text


def test_flow_file_loads_and_carries_the_code(acme: Inventory, tmp_path: Path) -> None:
    for candidate in acme.flows:
        path = tmp_path / f"{candidate.name}.toml"
        path.write_text(flow_toml(acme, candidate))
        assert load_flow(path).name == candidate.name
    approval = load_flow(tmp_path / "create_crm_draft.toml")
    assert [(type(n).__name__, n.name) for n in approval.nodes] == [
        ("Step", "create_crm_draft"), ("Wait", "decision"), ("Step", "activate_in_crm"),
        ("Step", "send_envelope"), ("Step", "confirm_partner")]
    steps = {s.name: s for s in approval.steps}
    assert steps["create_crm_draft"].effect == "crm.create_draft"
    assert steps["create_crm_draft"].retry.max_attempts == 6  # max_retries=5
    assert steps["create_crm_draft"].retry.backoff_coefficient == 2.0  # retry_backoff=True
    assert steps["send_envelope"].retry.initial_interval == 300  # self.retry(countdown=300)
    assert steps["send_envelope"].compensation == "crm.revert_draft"
    assert steps["activate_in_crm"].compensation == "crm.void_draft"  # link_error
    assert steps["activate_in_crm"].timeout == 300  # CELERY_TASK_SOFT_TIME_LIMIT
    assert isinstance(approval.node("decision"), Wait)
    assert approval.reversibility_class == "R2"
    renewal = load_flow(tmp_path / "schedule_renewal.toml")
    timer = renewal.node("before_charge_invoice")
    assert isinstance(timer, Timer)
    assert timer.duration == 3 * 86400
    charge = renewal.node("charge_invoice")
    assert isinstance(charge, Step)
    assert charge.compensation == "payments.refund"
    assert charge.timeout == 300  # the global soft limit stops it before time_limit=900
    assert {s.name: s.honours_idempotency for s in renewal.systems} == {
        "notify": False, "payments": False, "tasks": False}


def test_fail_on_thresholds(acme: Inventory) -> None:
    assert failures(acme, []) == []
    high = failures(acme, ["high"])
    assert "high hazard eta-beyond-visibility-timeout at billing/tasks.py:30" in high
    assert len(failures(acme, ["medium"])) == len(acme.hazards)
    assert failures(acme, ["graduate"]) == ["flow create_crm_draft: graduate",
                                            "flow schedule_renewal: graduate"]
    with pytest.raises(ConfigError, match="--fail-on 'severe' is not known"):
        check(["severe"])


def test_bad_paths_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; give the folder of a Celery"):
        inventory(tmp_path / "missing")


def test_a_flow_of_one_sweep_still_has_a_step(codebase: Codebase, tmp_path: Path) -> None:
    root = codebase({"tasks.py": """
        from celery import shared_task
        from orders.models import Order

        @shared_task
        def remind_pending_approvals():
            for order in Order.objects.filter(status="pending_approval"):
                order.status = "reminded"
                order.save()
        """, "settings.py": """
        CELERY_BEAT_SCHEDULE = {
            "remind": {"task": "tasks.remind_pending_approvals", "schedule": 3600},
        }
        """})
    found = inventory(root)
    (flow,) = found.flows
    assert [(s.task, s.role) for s in flow.steps] == [("remind_pending_approvals", "sweep")]
    path = tmp_path / "remind.toml"
    path.write_text(flow_toml(found, flow))
    loaded = load_flow(path)
    assert [n.name for n in loaded.nodes] == ["remind_pending_approvals", "decision"]


def test_sarif_paths_start_at_the_repository_root(codebase: Codebase) -> None:
    """Code hosts place a result by its path from the repository's root: reading `src/`
    of a repository reports `src/tasks.py`, with the repository as SRCROOT."""
    root = codebase({"src/my tasks.py": """
        from celery import Celery

        app = Celery("shop", broker="redis://")

        @app.task
        def remind(order_id): ...

        def later(order_id):
            remind.apply_async((order_id,), countdown=7200)
        """})
    (root / ".git").mkdir()
    result = CliRunner().invoke(app, ["inventory", str(root / "src"), "--format", "sarif"])
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["originalUriBaseIds"] == {"SRCROOT": {"uri": root.resolve().as_uri() + "/"}}
    (hazard,) = run["results"]
    assert hazard["locations"] == [{"physicalLocation": {
        "artifactLocation": {"uri": "src/my%20tasks.py", "uriBaseId": "SRCROOT"},
        "region": {"startLine": 9}}}]
    # Outside any repository, paths start at the folder read.
    alone = json.loads(to_sarif(inventory(root / "src"), "0.1.0"))["runs"][0]
    assert alone["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "my%20tasks.py", "uriBaseId": "SRCROOT"}
