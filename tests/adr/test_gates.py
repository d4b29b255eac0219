"""Gates tightened in `[tool.graduate.gates]`, and never loosened."""

from __future__ import annotations

import pytest

from graduate.adr.gates import DEFAULT_REQUIRED_FAULTS, FaultRequirement, load_policy
from graduate.check import Verdict
from graduate.config import load_settings
from graduate.errors import ConfigError
from tests.adr.conftest import REQUIRED, Project


def _gates(project: Project, body: str) -> None:
    (project.root / "pyproject.toml").write_text(
        f'[tool.graduate]\nspikes = "spikes"\n\n[tool.graduate.gates]\n{body}\n')


def test_settings_leave_the_gates_table_to_the_adr_module(project: Project) -> None:
    _gates(project, "min_instances = 3")

    assert load_settings(project_dir=project.root).spikes == "spikes"
    assert load_policy(project.root).min_instances == 3


def test_without_a_table_the_defaults_apply(project: Project) -> None:
    policy = load_policy(project.root)

    assert policy.target_engine == "temporal"
    assert policy.required_faults == DEFAULT_REQUIRED_FAULTS
    assert policy.min_instances == 1
    assert policy.require_profiles == ()


def test_min_instances_makes_small_runs_not_count(project: Project) -> None:
    project.spiking(*project.passing_runs())
    _gates(project, "min_instances = 3")

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert "it ran 1 instance(s); the gate asks for at least 3" in refused.out

    project.ok("adr", "attach", "3", *project.passing_runs(instances=3))
    project.ok("adr", "promote", "3", "--to", "approved")


def test_require_profiles_asks_for_each_fault_in_each_profile(project: Project) -> None:
    project.spiking(*project.passing_runs())
    _gates(project, 'require_profiles = ["defaults", "tuned"]')

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert "no attached temporal run of kill-worker in profile tuned" in refused.out
    assert "in profile defaults" not in refused.out

    project.ok("adr", "attach", "3", *project.passing_runs(profile="tuned"))
    project.ok("adr", "promote", "3", "--to", "approved")


def test_required_faults_add_to_the_defaults(project: Project) -> None:
    # Listing only partition does not drop the defaults: they stay required.
    _gates(project, 'required_faults = ["partition", "kill-worker@activate:before-effect"]')
    policy = load_policy(project.root)
    assert policy.required_faults == (*DEFAULT_REQUIRED_FAULTS, FaultRequirement("partition"),
                                      FaultRequirement("kill-worker", "activate",
                                                       "before-effect"))
    project.spiking(*[project.run(fault=f, versioned=v) for f, v in REQUIRED
                      if f != "stop-worker"])

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert "no attached temporal run of stop-worker" in refused.out
    assert "no attached temporal run of partition" in refused.out

    project.ok("adr", "attach", "3", project.run(fault="stop-worker"),
               project.run(fault="partition"))
    project.ok("adr", "promote", "3", "--to", "approved")


def test_the_target_engine_can_be_chosen(project: Project) -> None:
    _gates(project, 'target_engine = "celery-state-machine"')
    project.spiking(*project.passing_runs())

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert "no attached celery-state-machine run of kill-worker" in refused.out

    project.ok("adr", "attach", "3", *project.passing_runs(engine="celery-state-machine"))
    project.ok("adr", "promote", "3", "--to", "approved")


@pytest.mark.parametrize(("body", "words"), [
    ("require_junit = false", "unknown key(s) ['require_junit']; gates can be tightened, "
                              "never loosened"),
    ("required_faults = []\nskip_checklists = true", "unknown key(s) ['skip_checklists']"),
    ('target_engine = "dbos"', "target_engine = 'dbos' must be one of"),
    ("min_instances = 0", "min_instances = 0 must be a whole number from 1 up"),
    ('min_instances = "3"', "min_instances = '3' must be a whole number"),
    ('required_faults = ["kill-everything"]', "required_faults names 'kill-everything'"),
    ('required_faults = ["kill-worker@activate"]', "must read FAULT or FAULT@STEP:POINT"),
    ('required_faults = "kill-worker"', "must be a list of strings"),
    ('require_profiles = ["fast"]', "require_profiles names 'fast'"),
])
def test_a_bad_gates_table_is_refused_with_exit_2(project: Project, body: str,
                                                  words: str) -> None:
    project.ok("adr", "new", "partner_approval")
    _gates(project, body)

    with pytest.raises(ConfigError, match=r"\[tool\.graduate\.gates\]"):
        load_policy(project.root)
    result = project.cli("adr", "status")
    assert result.code == 2
    assert words in result.err


def test_a_run_of_an_earlier_definition_is_superseded_not_held_against_the_flow(
        project: Project) -> None:
    """A failing run, then a fix to the flow and passing runs of the fixed flow: the old
    failure no longer speaks for the flow, so it neither blocks nor counts."""
    failing = project.run(verdict=Verdict.LOST, trace_id="")
    project.spiking(failing)
    project.edit_spike('timeout = "10s"', 'timeout = "30s"')

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert f"run {failing} does not count: it ran another definition of the flow" in refused.out
    assert f"{failing}-01 lost" not in refused.out  # the old failure is not listed

    project.ok("adr", "attach", "3", *project.passing_runs())
    project.ok("adr", "promote", "3", "--to", "approved")


def test_a_wait_deadline_shortened_by_the_harness_is_not_a_change(project: Project) -> None:
    """wait-timeout runs shorten the wait's deadline so the run ends in seconds; the
    definition they record differs there, and only there, on purpose."""
    _gates(project, 'required_faults = ["wait-timeout"]')
    project.edit_spike('deadline = "72h"', 'deadline = "5s"')
    wait_timeout = project.run(fault="wait-timeout", wait_deadline=5.0)
    project.edit_spike('deadline = "5s"', 'deadline = "72h"')
    project.spiking(*project.passing_runs(), wait_timeout)

    project.ok("adr", "promote", "3", "--to", "approved")


def test_an_escalation_moved_with_its_shortened_deadline_is_not_a_change(
        project: Project) -> None:
    """A shortened wait keeps its escalation before its deadline by moving it with the
    deadline: the escalation's time differs on purpose too, its effect does not."""
    _gates(project, 'required_faults = ["wait-timeout"]')
    escalation = '\nescalation = {{ after = "{}", effect = "notify.escalate" }}'
    project.edit_spike('deadline = "72h"', 'deadline = "5s"' + escalation.format("2.5s"))
    wait_timeout = project.run(fault="wait-timeout", wait_deadline=5.0)
    project.edit_spike('deadline = "5s"' + escalation.format("2.5s"),
                       'deadline = "72h"' + escalation.format("36h"))
    project.spiking(*project.passing_runs(), wait_timeout)

    project.ok("adr", "promote", "3", "--to", "approved")


def test_a_run_of_a_profile_changed_since_does_not_count(project: Project) -> None:
    """require_profiles names a project profile; a run made before the profile's
    settings changed no longer shows what the profile does now."""
    profile = ('[tool.graduate.profiles.production]\n'
               'temporal = {{ heartbeat_timeout = {} }}\n')
    _gates(project, 'require_profiles = ["production"]\n\n' + profile.format(5))
    project.spiking(*project.passing_runs(profile="production"))
    _gates(project, 'require_profiles = ["production"]\n\n' + profile.format(30))

    refused = project.cli("adr", "promote", "3", "--to", "approved")
    assert refused.code == 1
    assert ("profile production has changed since it ran (heartbeat_timeout = 5, now 30)"
            in refused.out)

    project.ok("adr", "attach", "3", *project.passing_runs(profile="production"))
    project.ok("adr", "promote", "3", "--to", "approved")
