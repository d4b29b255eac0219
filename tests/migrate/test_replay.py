"""`graduate replay`: a run's exported histories replayed on the code about to be deployed.

The histories come from a real run on the Temporal dev server; the replayer is the SDK's.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from graduate.chaos.changes import changed_flow
from graduate.chaos.faults import parse_plan
from graduate.chaos.harness import ChaosOptions, run_chaos
from graduate.cli.app import app
from graduate.config import Settings
from graduate.evidence import EvidenceStore
from graduate.flow import Step, load_flow, write_flow_json
from graduate.runner import RunOptions, approve_all
from graduate.testing.plugin import ChaosRunner
from tests.conftest import FlowFactory

pytestmark = pytest.mark.slow


@pytest.fixture
def recorded(settings: Settings, flow_file: FlowFactory) -> tuple[Path, Path]:
    """A flow file, and the folder of histories its run on Temporal exported."""
    path = flow_file("chaos")
    flow = load_flow(path)
    store = EvidenceStore(settings.project_dir / "evidence")
    options = ChaosOptions(run=RunOptions(flow=str(path), engine="temporal", timeout=30,
                                          instances=2, decisions=approve_all(flow)),
                           plan=parse_plan("none", None, flow))
    result = run_chaos(settings, options, store)
    assert result.verdict.passed, result.verdict.failures
    return path, store.histories_path(result.run_id)


def graduate(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    return done.exit_code, done.output


def test_a_run_exports_one_history_per_instance(recorded: tuple[Path, Path]) -> None:
    _, histories = recorded
    assert len(list(histories.glob("*.json"))) == 2


def test_a_compatible_change_replays_clean(recorded: tuple[Path, Path],
                                           tmp_path: Path) -> None:
    """Longer timeouts and more attempts: the commands the workflow issues, in order,
    are the same, so the recorded histories replay."""
    path, histories = recorded
    flow = load_flow(path)
    nodes = tuple(replace(n, timeout=n.timeout * 2,
                          retry=replace(n.retry, max_attempts=n.retry.max_attempts + 2))
                  if isinstance(n, Step) else n for n in flow.nodes)
    compatible = write_flow_json(replace(flow, version=flow.version + 1, nodes=nodes,
                                         source=""), tmp_path / "next.json")
    junit = tmp_path / "replay.xml"

    code, output = graduate("replay", compatible.source, str(histories), "--junit",
                            str(junit))

    assert code == 0, output
    assert "all 2 histories replay on this code" in output
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "0")


@pytest.mark.parametrize("change", ["reorder", "add-step"])
def test_a_changed_order_of_activities_breaks_every_history_at_the_first_step(
        recorded: tuple[Path, Path], tmp_path: Path, change: str) -> None:
    path, histories = recorded
    flow = load_flow(path)
    reordered = write_flow_json(changed_flow(flow, change), tmp_path / "next.json")
    junit = tmp_path / "replay.xml"

    code, output = graduate("replay", str(reordered.source), str(histories), "--junit",
                            str(junit))

    assert code == 1, output
    assert "2 of 2 histories break" in output
    suite = ElementTree.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "2")
    for case in suite.iter("testcase"):
        failure = case.find("failure")
        assert failure is not None
        # The instance, and the event of the first step, where the new code schedules
        # another activity (event 5: started, task scheduled, started, completed, then
        # it; the memo's policy is in the input, so no patch marker comes before it).
        assert re.match(rf"{flow.name}-\w+-0[12]: breaks at event 5: ",
                        failure.get("message", "")), failure.get("message")
        assert "Nondeterminism" in (failure.text or "")


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-folder"], "no history file or folder no-such-folder"),
    (["not-history.json"], "is not a Temporal workflow history in JSON"),
    ([], "give history files, or --temporal-address"),
])
def test_bad_input_exits_2_with_the_fix(flow_file: FlowFactory, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, args: list[str],
                                        message: str) -> None:
    path = flow_file("chaos")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADUATE_TEMPORAL_ADDRESS", raising=False)
    (tmp_path / "not-history.json").write_text('{"events": "no"}')

    code, output = graduate("replay", str(path), *args)

    assert code == 2
    assert message in " ".join(output.split())


def test_the_histories_a_visibility_query_lists_are_fetched_from_the_server(
        recorded: tuple[Path, Path], settings: Settings) -> None:
    path, _ = recorded
    flow = load_flow(path)
    assert settings.temporal_address is not None

    code, output = graduate("--temporal-address", settings.temporal_address, "replay",
                            str(path), "--query", f'WorkflowId STARTS_WITH "{flow.name}-"')

    assert code == 0, output
    assert "all 2 histories replay on this code" in output


def test_a_teams_app_replays_on_its_own_workflow_code(chaos: ChaosRunner) -> None:
    """The example app's run, its histories replayed on the app's declared worker."""
    outcome = chaos("partner_approval_app", engine="temporal", instances=2)
    outcome.assert_ok()
    evidence = outcome.result.evidence
    assert evidence is not None
    histories = EvidenceStore(evidence.parents[1]).histories_path(outcome.result.run_id)

    code, output = graduate("replay", "partner_approval_app", str(histories))

    assert code == 0, output
    assert "all 2 histories replay on this code" in output
