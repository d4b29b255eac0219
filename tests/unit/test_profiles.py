"""Profiles: the built-in ones, and a project's own from [tool.graduate.profiles]."""

from __future__ import annotations

from pathlib import Path

import pytest

from graduate.chaos.profiles import BUILT_IN, load_profiles, profile_settings
from graduate.config import load_settings
from graduate.errors import ConfigError


def project(tmp_path: Path, body: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "team"\n\n[tool.graduate]\nspikes = "spikes"\n\n{body}',
        encoding="utf-8")
    return tmp_path


def test_defaults_override_nothing_and_tuned_sets_a_heartbeat(tmp_path: Path) -> None:
    assert profile_settings("defaults", "temporal", tmp_path) == {}
    assert profile_settings("tuned", "temporal", tmp_path)["heartbeat_timeout"] == 2.0
    assert profile_settings("tuned", "celery-chain", tmp_path)["task_acks_late"] is True


def test_a_project_profile_extends_a_built_in_one_per_engine(tmp_path: Path) -> None:
    folder = project(tmp_path, """\
[tool.graduate.profiles.production]
description = "what we run"
extends = "tuned"
temporal = { heartbeat_timeout = 5 }

[tool.graduate.profiles.production.celery-chain]
visibility_timeout = 3600
""")

    production = load_profiles(folder)["production"]

    assert production.description == "what we run (extends tuned)"
    assert production.settings("temporal") == {"graceful_shutdown_timeout": 10.0,
                                               "heartbeat_timeout": 5}
    chain = production.settings("celery-chain")
    assert chain["visibility_timeout"] == 3600
    assert chain["task_acks_late"] is True
    assert production.settings("celery-state-machine")["lease_margin"] == 1.0
    # The rest of the project's settings still load beside the profiles.
    assert load_settings(project_dir=folder).spikes_dir == folder / "spikes"


def test_a_project_profile_extends_the_defaults_unless_told(tmp_path: Path) -> None:
    folder = project(tmp_path, '[tool.graduate.profiles.acks]\n'
                               'celery-chain = { task_acks_late = true }\n')

    assert profile_settings("acks", "celery-chain", folder) == {"task_acks_late": True}
    assert profile_settings("acks", "temporal", folder) == {}


@pytest.mark.parametrize(("body", "expected"), [
    ('[tool.graduate.profiles.p]\ntemporal = { heartbeat = 5 }\n',
     ["[tool.graduate.profiles.p]", "'heartbeat' is not a Temporal setting",
      "heartbeat_timeout"]),
    ('[tool.graduate.profiles.p]\ntemporal = { heartbeat_timeout = -1 }\n',
     ["heartbeat_timeout = -1 must be a number of seconds, more than 0"]),
    ('[tool.graduate.profiles.p]\ntemporal = { worker_versioning = "yes" }\n',
     ["worker_versioning = 'yes' must be true or false"]),
    ('[tool.graduate.profiles.p]\ntemporal = { heartbeat_timeout = 0 }\n',
     ["heartbeat_timeout = 0 must be a number of seconds, more than 0"]),
    ('[tool.graduate.profiles.p]\ntemporal = { heartbeat_timeout = inf }\n',
     ["heartbeat_timeout = inf must be"]),
    ('[tool.graduate.profiles.p]\ntemporal = { graceful_shutdown_timeout = nan }\n',
     ["graceful_shutdown_timeout = nan must be a number of seconds, 0 and at most"]),
    ('[tool.graduate.profiles.p]\ncelery-chain = { task_acks_late = "yes" }\n',
     ["task_acks_late = 'yes' must be true or false"]),
    ('[tool.graduate.profiles.p]\ncelery-chain = { visibility_timeout = "1h" }\n',
     ["visibility_timeout = '1h' must be a number of seconds"]),
    ('[tool.graduate.profiles.p]\ncelery-chain = { worker_prefetch_multiplier = 1.5 }\n',
     ["worker_prefetch_multiplier = 1.5 must be a whole number"]),
    ('[tool.graduate.profiles.p]\ncelery-state-machine = { lease_margin = "x" }\n',
     ["lease_margin = 'x' must be a number of seconds"]),
    ('profiles = ["fast"]\n',
     ["[tool.graduate.profiles] must be a table of profiles"]),
    ('[tool.graduate.profiles.p]\nextends = ["tuned"]\n',
     ["extends = ['tuned']", "defaults, tuned"]),
    ('[tool.graduate.profiles.p]\ntemporal = { heartbeat_timeout = "5s" }\n',
     ["heartbeat_timeout = '5s' must be a number of seconds"]),
    ('[tool.graduate.profiles.p]\ncelery-chain = { acks_late = true }\n',
     ["[tool.graduate.profiles.p]", "'acks_late' is not a Celery setting",
      "task_acks_late"]),
    ('[tool.graduate.profiles.p]\ncelery-chain = { lease_margin = 1 }\n',
     ["'lease_margin' is not a Celery setting"]),
    ('[tool.graduate.profiles.p]\nairflow = { retries = 3 }\n',
     ["'airflow' is not an engine", "celery-state-machine"]),
    ('[tool.graduate.profiles.p]\ntemporal = 5\n',
     ["temporal must be a table of settings", "heartbeat_timeout = 5"]),
    ('[tool.graduate.profiles.p]\nextends = "fast"\n',
     ["extends = 'fast'", "defaults, tuned"]),
    ('[tool.graduate.profiles.tuned]\ntemporal = { heartbeat_timeout = 1 }\n',
     ["'tuned' is a built-in profile", 'extends = "tuned"']),
])
def test_a_mistaken_project_profile_says_what_to_fix(tmp_path: Path, body: str,
                                                     expected: list[str]) -> None:
    folder = project(tmp_path, body)

    with pytest.raises(ConfigError) as raised:
        load_profiles(folder)

    for fragment in expected:
        assert fragment in str(raised.value)


def test_an_unknown_profile_lists_the_projects_own_too(tmp_path: Path) -> None:
    folder = project(tmp_path, '[tool.graduate.profiles.production]\n'
                               'temporal = { heartbeat_timeout = 5 }\n')

    with pytest.raises(ConfigError) as raised:
        profile_settings("fast", "temporal", folder)

    assert "unknown profile 'fast'" in str(raised.value)
    assert f"{', '.join(BUILT_IN)}, production" in str(raised.value)
