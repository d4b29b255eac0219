"""Run options are checked against the flow before any engine or service starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import graduate
from graduate import apps
from graduate.config import load_settings
from graduate.errors import ConfigError
from graduate.flow import Flow, load_flow
from graduate.runner import Decision, Failure, RunOptions, validate_options
from graduate.runs import session


@pytest.mark.parametrize(("text", "expected"), [
    ("create_record=transient", Failure("create_record", "transient", 1)),
    ("create_record=transient:3", Failure("create_record", "transient", 3)),
    ("activate=permanent", Failure("activate", "permanent", 1)),
])
def test_a_failure_spec_is_parsed(text: str, expected: Failure) -> None:
    assert Failure.parse(text) == expected


@pytest.mark.parametrize("text", [
    "create_record", "create_record=", "create_record=flaky", "create_record=Transient",
    "create_record=transient:x", "create_record=transient:-1", "create_record=transient:1.5",
    "create_record:transient", "create_record=transient:0", "create_record=permanent:5",
    "create_record=transient:", "=transient", "create_record=transient:\u00b2",
])
def test_a_failure_spec_that_is_not_understood_shows_both_forms(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Failure.parse(text)
    message = str(caught.value)
    assert f"--fail {text!r} is not understood" in message
    assert "STEP=transient:N" in message
    assert "or STEP=permanent" in message


def options(*, engine: str = "temporal", instances: int = 1, workers: int = 1,
            timeout: float = 10.0, decisions: Mapping[str, Decision] | None = None,
            failures: Sequence[Failure] = ()) -> RunOptions:
    return RunOptions(flow="partner_approval", engine=engine, instances=instances,
                      workers=workers, timeout=timeout, decisions=decisions or {},
                      failures=failures)


@pytest.mark.parametrize("engine", ["temporal", "celery-chain", "celery-state-machine"])
def test_options_that_fit_the_flow_pass(sample_flow: Flow, engine: str) -> None:
    validate_options(sample_flow, options(
        engine=engine, instances=3, workers=2, decisions={"approval": "reject"},
        failures=[Failure("activate", "transient", 2)]))


def test_an_unknown_engine_is_named_with_the_engines_there_are(sample_flow: Flow) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(sample_flow, options(engine="airflow"))
    assert str(caught.value) == (
        "unknown engine 'airflow'; choose one of: temporal, celery-chain, celery-state-machine")


def test_a_decision_for_a_signal_the_flow_never_awaits_is_refused(sample_flow: Flow) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(sample_flow, options(decisions={"sign_off": "approve"}))
    assert str(caught.value) == (
        "flow 'partner_approval' waits for no signal 'sign_off'; its waits take: approval")


def test_a_decision_for_a_flow_without_waits_says_so(mini_flow: Flow) -> None:
    no_waits = replace(mini_flow, nodes=mini_flow.steps)
    with pytest.raises(ConfigError, match="its waits take: none"):
        validate_options(no_waits, options(decisions={"approval": "approve"}))


def test_a_decision_must_be_approve_or_reject(sample_flow: Flow) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_options(sample_flow, options(
            decisions={"approval": "maybe"}))  # type: ignore[dict-item]
    assert str(caught.value) == "decision 'maybe' for approval must be approve or reject"


@pytest.mark.parametrize("step", ["approval", "create"])
def test_a_failure_must_name_a_step_of_the_flow(sample_flow: Flow, step: str) -> None:
    # "approval" is the flow's wait, not a step: nothing could fail there.
    with pytest.raises(ConfigError) as caught:
        validate_options(sample_flow, options(failures=[Failure(step, "permanent")]))
    assert str(caught.value) == (
        f"--fail names step {step!r}, which flow 'partner_approval' does not have; its steps: "
        "activate, create_record, notify, request_approval")


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"instances": 0}, "--instances and --workers must be 1 or more"),
    ({"instances": -2}, "--instances and --workers must be 1 or more"),
    ({"workers": 0}, "--instances and --workers must be 1 or more"),
    ({"timeout": 0.0}, "--timeout must be a positive number of seconds"),
    ({"timeout": -1.0}, "--timeout must be a positive number of seconds"),
])
def test_counts_and_timeout_must_be_positive(
    sample_flow: Flow, changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        validate_options(sample_flow, replace(options(), **changes))


@pytest.mark.parametrize("call", [graduate.run, graduate.chaos], ids=["run", "chaos"])
def test_a_library_run_loads_its_flow_once(call: Callable[..., object], sample_path: Path,
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The flow is read where the target is resolved and handed down to the session,
    which used to read it again. (A signal the flow lacks stops the run right after, as
    the session checks the options: before any service or worker starts.)"""
    loads: list[str] = []

    def counted(ref: str, **named: Any) -> Flow:
        loads.append(ref)
        return load_flow(ref, **named)

    monkeypatch.setattr(apps, "load_flow", counted)
    monkeypatch.setattr(session, "load_flow", counted)
    with pytest.raises(ConfigError, match="waits for no signal 'nope'"):
        call(str(sample_path), engine="temporal", decisions={"nope": "approve"},
             settings=load_settings(project_dir=tmp_path))

    assert loads == [str(sample_path)]
