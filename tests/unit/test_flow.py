"""The flow model: loading, validation, the JSON form, keys, compensation order, backoff."""

from __future__ import annotations

import errno
import json
import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from graduate.errors import FlowError
from graduate.flow import (
    ApprovalClass,
    Flow,
    InstanceRequest,
    RetryPolicy,
    ReversibilityClass,
    SensitivityClass,
    Step,
    SystemSpec,
    Timer,
    Wait,
    discover,
    flow_from_dict,
    flow_to_dict,
    load_flow,
    parse_duration,
    validate,
)

WriteFlow = Callable[..., Path]
Edits = Sequence[tuple[str, str]]

RETRY_LINE = 'retry = { max_attempts = 3, initial_interval = "1s", maximum_interval = "10s" }'
WAIT_BLOCK = '[[nodes]]\nwait = "approval"\ndeadline = "1h"\n'
KEY_LINE = 'idempotency_key = "{tenant_id}:{flow}:{entity_id}:{date}:{step}"'
CLASS_LINES = {
    "approval_class": 'approval_class = "A1"\n',
    "reversibility_class": 'reversibility_class = "R1"\n',
    "sensitivity_class": 'sensitivity_class = "S1"\n',
}


def retry(spec: str) -> list[tuple[str, str]]:
    return [(RETRY_LINE, f"retry = {{ {spec} }}")]


def with_key(key: str) -> list[tuple[str, str]]:
    return [("version = 1\n", f'version = 1\nidempotency_key = "{key}"\n')]


def raises_flow_error(call: Callable[[], object]) -> str:
    with pytest.raises(FlowError) as caught:
        call()
    return str(caught.value)


def assert_mentions(message: str, fragments: Sequence[str]) -> None:
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


# ---------------------------------------------------------------------------- the sample


def test_the_sample_spike_loads_with_its_classes_nodes_and_systems(sample_path: Path) -> None:
    flow = load_flow(sample_path)

    assert flow.name == "partner_approval"
    assert flow.version == 1
    assert (flow.approval_class, flow.reversibility_class, flow.sensitivity_class) == (
        ApprovalClass.A2, ReversibilityClass.R2, SensitivityClass.S2)
    assert [n.name for n in flow.nodes] == [
        "create_record", "request_approval", "approval", "activate", "notify"]
    assert flow.waits == (Wait("approval", signal="approval", deadline=72 * 3600.0),)
    assert {s.name: s.honours_idempotency for s in flow.systems} == {
        "crm": True, "approvals": True, "partner_portal": False, "notify": False}
    assert {s.name: s.compensation for s in flow.steps} == {
        "create_record": "crm.void_draft", "request_approval": "approvals.withdraw",
        "activate": None, "notify": None}
    create = flow.steps[0]
    assert create.effect == "crm.create_draft"
    assert create.system == "crm"
    assert create.timeout == 10.0
    assert create.retry == RetryPolicy(max_attempts=5, initial_interval=0.2,
                                       backoff_coefficient=2.0, maximum_interval=2.0)
    assert flow.source == str(sample_path.resolve())


def test_the_minimal_flow_fills_in_defaults(mini_flow: Flow) -> None:
    notify = mini_flow.node("notify")
    assert notify == Step("notify", "mail.send", timeout=30.0, retry=RetryPolicy())
    assert mini_flow.node("approval") == Wait(
        "approval", signal="approval", deadline=3600.0, on_timeout="compensate",
        on_reject="compensate")
    assert mini_flow.idempotency_key == "{tenant_id}:{flow}:{entity_id}:{date}:{step}"


# ---------------------------------------------------------------------------- validation

INVALID: list[object] = [
    # names
    pytest.param([('step = "notify"', 'step = "create"')], "",
                 ["flow 'mini'", "step 'create'", "used twice",
                  "give every step, wait and timer its own name"], id="duplicate-step-name"),
    pytest.param([('wait = "approval"', 'wait = "create"')], "",
                 ["flow 'mini'", "wait 'create'", "used twice"], id="wait-named-like-a-step"),
    pytest.param([('name = "mini"', 'name = "Mini-Flow"')], "",
                 ["flow 'Mini-Flow'", "lower-case letters, digits and underscores"],
                 id="bad-flow-name"),
    pytest.param([('step = "notify"', 'step = "Notify"')], "",
                 ["flow 'mini'", "step 'Notify'", "lower-case letters"], id="bad-step-name"),
    pytest.param([("version = 1", "version = 0")], "",
                 ["flow 'mini'", "version must be a whole number from 1 up"], id="version-0"),
    pytest.param([("version = 1", 'version = "1"')], "",
                 ["flow 'mini'", "version = '1' must be a whole number"], id="version-text"),
    # compensations
    pytest.param([], 'ghost = "crm.delete"\n',
                 ["flow 'mini'", "[compensations] names step 'ghost'",
                  "use one of ['create', 'notify'] or remove the line"],
                 id="compensation-for-unknown-step"),
    pytest.param([], 'approval = "crm.delete"\n',
                 ["flow 'mini'", "step 'approval'", "remove the line"],
                 id="compensation-for-a-wait"),
    pytest.param([('create = "crm.delete"', "create = 3")], "",
                 ["flow 'mini'", "[compensations]", "create = 3 must be a string"],
                 id="compensation-not-text"),
    # classes
    *[
        pytest.param([(line, "")], "",
                     ["flow 'mini'", f"{key} is missing", "execution-fabric policy",
                      f"Add {key} = one of:"], id=f"missing-{key}")
        for key, line in CLASS_LINES.items()
    ],
    pytest.param([('approval_class = "A1"', 'approval_class = "A9"')], "",
                 ["flow 'mini'", "approval_class = 'A9' is not allowed",
                  "use one of: A0 (no approval), A1"], id="bad-approval-class"),
    pytest.param([('reversibility_class = "R1"', 'reversibility_class = "R4"')], "",
                 ["flow 'mini'", "reversibility_class = 'R4'", "use one of: R0"],
                 id="bad-reversibility-class"),
    pytest.param([('sensitivity_class = "S1"', 'sensitivity_class = "s1"')], "",
                 ["flow 'mini'", "sensitivity_class = 's1'", "use one of: S0"],
                 id="lower-case-sensitivity-class"),
    # systems and effects
    pytest.param([('effect = "mail.send"', 'effect = "sms.send"')], "",
                 ["flow 'mini'", "step 'notify'", "effect 'sms.send' goes to system 'sms'",
                  "add [systems.sms] with honours_idempotency"], id="effect-to-unknown-system"),
    pytest.param([('create = "crm.delete"', 'create = "sms.undo"')], "",
                 ["flow 'mini'", "step 'create'", "compensation 'sms.undo'",
                  "add [systems.sms]"], id="compensation-to-unknown-system"),
    pytest.param([('effect = "mail.send"', 'effect = "send_mail"')], "",
                 ["flow 'mini'", "step 'notify'", "effect 'send_mail' must read SYSTEM.OPERATION",
                  'for example "crm.create_record"'], id="effect-without-system"),
    pytest.param([('effect = "mail.send"', 'effect = "Mail.Send"')], "",
                 ["step 'notify'", "SYSTEM.OPERATION"], id="effect-upper-case"),
    pytest.param([('create = "crm.delete"', 'create = "crm.delete.now"')], "",
                 ["step 'create'", "compensation 'crm.delete.now' must read SYSTEM.OPERATION"],
                 id="compensation-bad-format"),
    pytest.param([('effect = "mail.send"\n', "")], "",
                 ["flow 'mini'", "step 'notify'", "effect is missing; add effect ="],
                 id="missing-effect"),
    pytest.param([("honours_idempotency = false", 'honours_idempotency = "no"')], "",
                 ["flow 'mini'", "[systems.mail]", "must be true or false"],
                 id="honours-idempotency-not-bool"),
    pytest.param([("[systems.mail]\nhonours_idempotency = false\n", ""),
                  ("[systems.crm]", "[systems]\nmail = true\n\n[systems.crm]")], "",
                 ["flow 'mini'", "[systems.mail] must be a table"], id="system-not-a-table"),
    # timeouts, deadlines, durations
    pytest.param([('timeout = "10s"', 'timeout = "0s"')], "",
                 ["flow 'mini'", "step 'create'", "timeout must be positive",
                  'for example "30s"'], id="zero-timeout"),
    pytest.param([('timeout = "10s"', "timeout = -1")], "",
                 ["step 'create'", "timeout must be positive"], id="negative-timeout"),
    pytest.param([('deadline = "1h"', "deadline = 0")], "",
                 ["flow 'mini'", "wait 'approval'", "deadline must be positive",
                  'for example "72h"'], id="zero-deadline"),
    pytest.param([('deadline = "1h"\n', "")], "",
                 ["flow 'mini'", "wait 'approval'", "deadline is missing; add deadline = "],
                 id="missing-deadline"),
    pytest.param([('timeout = "10s"', 'timeout = "soon"')], "",
                 ["flow 'mini'", "step 'create': timeout", "'soon' is not a duration",
                  'write for example "30s"'], id="bad-duration-string"),
    pytest.param([('timeout = "10s"', "timeout = true")], "",
                 ["flow 'mini'", "step 'create': timeout", "True is not a duration",
                  'write for example "30s"'], id="bool-duration"),
    pytest.param([('deadline = "1h"', 'deadline = "3 days"')], "",
                 ["wait 'approval': deadline", "'3 days' is not a duration"],
                 id="bad-deadline-unit"),
    pytest.param([], '\n[[nodes]]\ntimer = "pause"\nduration = -1\n',
                 ["flow 'mini'", "timer 'pause'", "duration must not be negative"],
                 id="negative-timer"),
    pytest.param([], '\n[[nodes]]\ntimer = "pause"\n',
                 ["flow 'mini'", "timer 'pause'", "duration is missing; add duration = "],
                 id="timer-without-duration"),
    # retry
    pytest.param(retry("max_attempts = 0"), "",
                 ["flow 'mini'", "step 'create'", "retry.max_attempts must be 1 or more",
                  "1 means no retry"], id="retry-zero-attempts"),
    pytest.param(retry('initial_interval = "0s"'), "",
                 ["step 'create'", "retry intervals must be positive"],
                 id="retry-zero-initial-interval"),
    pytest.param(retry('initial_interval = "5s", maximum_interval = "1s"'), "",
                 ["step 'create'", "maximum_interval at least initial_interval"],
                 id="retry-maximum-below-initial"),
    pytest.param(retry("backoff_coefficient = 0.5"), "",
                 ["step 'create'", "retry.backoff_coefficient must be 1 or more"],
                 id="retry-shrinking-backoff"),
    pytest.param(retry("max_attempts = 2.5"), "",
                 ["flow 'mini'", "step 'create' [retry]", "max_attempts = 2.5 must be a whole"],
                 id="retry-fractional-attempts"),
    pytest.param(retry("max_attempts = true"), "",
                 ["step 'create' [retry]", "max_attempts = True must be a whole number"],
                 id="retry-bool-attempts"),
    pytest.param(retry('backoff_coefficient = "2"'), "",
                 ["step 'create' [retry]", "backoff_coefficient = '2' must be a number"],
                 id="retry-text-coefficient"),
    pytest.param([(RETRY_LINE, "retry = 3")], "",
                 ["flow 'mini'", "step 'create'", "retry = 3 must be a table"],
                 id="retry-not-a-table"),
    # unknown keys
    pytest.param([], '\n[owner]\nteam = "ops"\n',
                 ["flow 'mini'", "unknown key(s) ['owner']",
                  "allowed: ['compensations', 'flow', 'input', 'interrupt', 'nodes', 'systems']"],
                 id="unknown-top-level-table"),
    pytest.param([("version = 1\n", 'version = 1\nowner = "ops"\n')], "",
                 ["flow 'mini'", "unknown key(s) ['owner']", "allowed: ['approval_class'"],
                 id="unknown-key-in-flow"),
    pytest.param([('effect = "crm.create"', 'effect = "crm.create"\ncompensation = "crm.delete"')],
                 "", ["flow 'mini'", "step 'create'", "unknown key(s) ['compensation']",
                      "compensations go in the [compensations] table"],
                 id="unknown-key-in-step"),
    pytest.param(retry('max_attempts = 3, jitter = 0.1'), "",
                 ["flow 'mini'", "step 'create' [retry]", "unknown key(s) ['jitter']",
                  "allowed: ['backoff_coefficient', 'initial_interval', 'max_attempts'"],
                 id="unknown-key-in-retry"),
    pytest.param([('deadline = "1h"', 'deadline = "1h"\nescalate = true')], "",
                 ["flow 'mini'", "wait 'approval'", "unknown key(s) ['escalate']",
                  "allowed: ['deadline'"], id="unknown-key-in-wait"),
    pytest.param([], '\n[[nodes]]\ntimer = "pause"\nduration = "1s"\nrepeat = 2\n',
                 ["flow 'mini'", "timer 'pause'", "unknown key(s) ['repeat']"],
                 id="unknown-key-in-timer"),
    pytest.param([("honours_idempotency = false", 'honours_idempotency = false\nregion = "eu"')],
                 "", ["flow 'mini'", "[systems.mail]", "unknown key(s) ['region']",
                      "allowed: ['honours_idempotency']"], id="unknown-key-in-system"),
    # node kinds
    pytest.param([('step = "notify"', 'name = "notify"')], "",
                 ["flow 'mini'", "exactly one of step = \"NAME\", wait = \"NAME\" or timer",
                  "found {name = 'notify', effect = 'mail.send'}"], id="node-without-kind"),
    pytest.param([('step = "notify"', 'step = "notify"\nwait = "notify"')], "",
                 ["flow 'mini'", "exactly one of", "found {step = 'notify', wait = 'notify'"],
                 id="node-with-two-kinds"),
    # waits
    pytest.param([], '\n[[nodes]]\nwait = "second_look"\nsignal = "approval"\ndeadline = "1h"\n',
                 ["flow 'mini'", "wait 'second_look'", "signal 'approval' is already awaited",
                  "give each wait its own signal name"], id="signal-awaited-twice"),
    pytest.param([('deadline = "1h"', 'deadline = "1h"\non_timeout = "escalate"')], "",
                 ["flow 'mini'", "wait 'approval'", "on_timeout = 'escalate'",
                  "is not one of compensate, fail, continue"], id="bad-on-timeout"),
    pytest.param([('deadline = "1h"', 'deadline = "1h"\non_reject = "continue"')], "",
                 ["wait 'approval'", "on_reject = 'continue' is not one of compensate, fail"],
                 id="reject-cannot-continue"),
    *[
        pytest.param([('reversibility_class = "R1"', f'reversibility_class = "{cls}"'),
                      (WAIT_BLOCK, "")], "",
                     ["flow 'mini'", f"reversibility_class {cls} requires a human approval wait",
                      "add a [[nodes]] wait, or lower the class"], id=f"{cls}-without-wait")
        for cls in ("R2", "R3")
    ],
    # idempotency keys
    pytest.param(with_key("{tenant_id}:{customer}:{step}"), "",
                 ["flow 'mini'", "idempotency_key uses unknown field(s) ['customer']",
                  "allowed: ['date', 'entity_id', 'flow', 'instance_id', 'step', 'tenant_id', "
                  "'workflow_type', 'yyyymmdd']"],
                 id="key-unknown-field"),
    # Without {step}, the systems tell calls apart by operation only: two steps calling
    # one operation would share a key, and the second would be absorbed.
    pytest.param([*with_key("{tenant_id}:{entity_id}:{date}"),
                  ('effect = "mail.send"', 'effect = "crm.create"')], "",
                 ["flow 'mini'", "idempotency_key has no {step}", "crm.create",
                  "from more than one step", "add {step} to the key"],
                 id="key-without-step-shared-operation"),
    pytest.param([*with_key("{tenant_id}:{entity_id}:{date}"),
                  ('create = "crm.delete"', 'create = "crm.create"')], "",
                 ["flow 'mini'", "idempotency_key has no {step}", "crm.create"],
                 id="key-without-step-compensation-shares-operation"),
    pytest.param(with_key("{tenant_id}:{}:{step}"), "",
                 ["flow 'mini'", "unknown field(s) ['']"], id="key-positional-field"),
    pytest.param(with_key("{tenant_id.upper}:{step}"), "",
                 ["flow 'mini'", "unknown field(s) ['tenant_id.upper']"],
                 id="key-attribute-access"),
    pytest.param(with_key("{step}:{tenant_id"), "",
                 ["flow 'mini'", "idempotency_key '{step}:{tenant_id' is not a valid template",
                  "write fields as {name}"], id="key-unclosed-brace"),
    pytest.param(with_key("{tenant_id}:{step"), "",
                 ["flow 'mini'", "is not a valid template"], id="key-unclosed-step"),
    pytest.param(with_key("{step}}"), "",
                 ["flow 'mini'", "is not a valid template"], id="key-stray-brace"),
    pytest.param(with_key("{step:q}"), "",
                 ["flow 'mini'", "idempotency_key '{step:q}' is not a valid template",
                  "write fields as {name}"], id="key-bad-format-spec"),
]


@pytest.mark.parametrize(("edits", "append", "fragments"), INVALID)
def test_an_invalid_flow_is_rejected_with_a_message_that_says_what_to_fix(
    write_flow: WriteFlow, edits: Edits, append: str, fragments: list[str]
) -> None:
    path = write_flow(edits, append)

    message = raises_flow_error(lambda: load_flow(path))

    assert_mentions(message, fragments)


def test_each_variant_edits_a_flow_that_is_otherwise_valid(write_flow: WriteFlow) -> None:
    # The parametrised cases above only mean something if the base they edit loads.
    flow = load_flow(write_flow())
    assert flow.name == "mini"
    assert [n.name for n in flow.nodes] == ["create", "approval", "notify"]


def test_a_flow_without_nodes_is_rejected(mini_flow: Flow) -> None:
    message = raises_flow_error(lambda: validate(replace(mini_flow, nodes=())))
    assert_mentions(message, ["flow 'mini'", "it has no steps", "add at least one [[nodes]]"])


def test_a_document_without_flow_table_is_rejected(write_flow: WriteFlow) -> None:
    path = write_flow(text='[systems.crm]\nhonours_idempotency = true\n')
    message = raises_flow_error(lambda: load_flow(path))
    assert_mentions(message, [str(path), "flow is missing", "add flow ="])


def test_nodes_that_are_not_tables_are_rejected(mini_flow: Flow) -> None:
    data = flow_to_dict(mini_flow)
    data["nodes"] = ["create"]
    message = raises_flow_error(lambda: flow_from_dict(data, origin="evidence.json"))
    assert_mentions(message, ["evidence.json: flow 'mini'", "every entry of nodes must be a "
                              "[[nodes]] table"])


def test_invalid_toml_names_the_file_and_where_the_syntax_breaks(write_flow: WriteFlow) -> None:
    path = write_flow(text='[flow\nname = "mini"\n')
    message = raises_flow_error(lambda: load_flow(path))
    assert_mentions(message, [f"flow file {path} is not valid TOML", "line 1"])


def test_a_missing_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = raises_flow_error(lambda: load_flow(path))
    assert_mentions(message, [f"flow file {path} does not exist", "check the path",
                              "`graduate flows`"])


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0), (2.5, 2.5), (0, 0.0), ("500ms", 0.5), ("10s", 10.0), ("5m", 300.0),
    ("72h", 259200.0), ("1d", 86400.0), ("1.5h", 5400.0), (" 10 s ", 10.0),
    ("2w", 14 * 86400.0), ("0.5w", 3.5 * 86400.0),
])
def test_durations_are_read_in_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value, "timeout") == seconds


@pytest.mark.parametrize("value", [
    True, False, "10", "10x", "", "s", "-5s", "1 week", "5 min", "1h30m", None, [10], {"s": 1},
])
def test_a_value_that_is_no_duration_is_rejected_naming_where_it_is(value: object) -> None:
    message = raises_flow_error(lambda: parse_duration(value, "flow 'mini', step 'x': timeout"))
    assert_mentions(message, ["flow 'mini', step 'x': timeout", f"{value!r} is not a duration",
                              'write for example "30s"'])


def test_a_duration_error_lists_the_units_weeks_included() -> None:
    message = raises_flow_error(lambda: parse_duration("2 weeks", "wait 'review': deadline"))
    assert_mentions(message, ['"500ms"', '"30s"', '"5m"', '"72h"', '"2d"', '"2w"'])


# ---------------------------------------------------------------------------- JSON form


def test_the_sample_round_trips_through_its_dict_form(sample_flow: Flow) -> None:
    rebuilt = flow_from_dict(flow_to_dict(sample_flow))
    assert replace(rebuilt, source=sample_flow.source) == sample_flow


def test_every_node_kind_round_trips_through_json(write_flow: WriteFlow) -> None:
    flow = load_flow(write_flow(
        [("deadline = \"1h\"", 'deadline = "1h"\nsignal = "go"\non_timeout = "continue"\n'
                                'on_reject = "fail"'),
         ("version = 1\n", 'version = 3\nidempotency_key = "{instance_id}:{step}"\n')],
        '\n[[nodes]]\ntimer = "cool_off"\nduration = "250ms"\n',
    ))
    assert isinstance(flow.nodes[-1], Timer)

    rebuilt = flow_from_dict(json.loads(json.dumps(flow_to_dict(flow))))

    assert replace(rebuilt, source=flow.source) == flow
    assert rebuilt.source == ""


# ---------------------------------------------------------------------------- keys


@pytest.fixture
def request_1() -> InstanceRequest:
    return InstanceRequest(instance_id="partner_approval-abc123-01", run_id="abc123",
                           tenant_id="tenant7", entity_id="partner42", date="20250102",
                           correlation_id="corr", trace_id="trace")


def test_a_key_follows_the_dealix_format_plus_the_step(
    sample_flow: Flow, request_1: InstanceRequest
) -> None:
    assert sample_flow.key_for("create_record", request_1) == (
        "tenant7:partner_approval:partner42:20250102:create_record")


def test_every_effect_and_its_compensation_get_their_own_key(
    sample_flow: Flow, request_1: InstanceRequest
) -> None:
    keys = [sample_flow.key_for(s.name, request_1, compensation=c)
            for s in sample_flow.steps for c in (False, True)]

    assert len(set(keys)) == len(keys)
    assert sample_flow.key_for("create_record", request_1, compensation=True) == (
        "tenant7:partner_approval:partner42:20250102:create_record.compensation")


def test_a_key_is_stable_for_one_instance_and_differs_between_instances(
    sample_flow: Flow, request_1: InstanceRequest
) -> None:
    other = replace(request_1, instance_id="partner_approval-abc123-02", entity_id="partner43")
    assert sample_flow.key_for("activate", request_1) == sample_flow.key_for(
        "activate", replace(request_1, correlation_id="another", trace_id="another"))
    assert sample_flow.key_for("activate", request_1) != sample_flow.key_for("activate", other)


def test_a_custom_key_may_use_the_instance_id(
    sample_flow: Flow, request_1: InstanceRequest
) -> None:
    flow = validate(replace(sample_flow, idempotency_key="{instance_id}/{step}"))
    assert flow.key_for("notify", request_1) == "partner_approval-abc123-01/notify"


# ---------------------------------------------------------------------------- compensation


def test_compensation_runs_in_reverse_and_skips_what_has_none(sample_flow: Flow) -> None:
    done = ["create_record", "request_approval", "approval", "activate"]
    assert [s.name for s in sample_flow.compensations_for(done)] == [
        "request_approval", "create_record"]


def test_compensation_covers_only_what_was_done(sample_flow: Flow) -> None:
    assert [s.name for s in sample_flow.compensations_for(("create_record",))] == [
        "create_record"]
    assert sample_flow.compensations_for([]) == []


def test_compensation_of_an_unknown_node_names_it(sample_flow: Flow) -> None:
    message = raises_flow_error(lambda: sample_flow.compensations_for(["ghost"]))
    assert_mentions(message, ["flow 'partner_approval'", "no step, wait or timer named 'ghost'"])


# ---------------------------------------------------------------------------- backoff


def test_backoff_grows_by_the_coefficient_and_stops_at_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=10, initial_interval=1.0, backoff_coefficient=2.0,
                         maximum_interval=5.0)
    assert [policy.delay_after(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_backoff_with_coefficient_one_is_constant() -> None:
    policy = RetryPolicy(initial_interval=0.2, backoff_coefficient=1.0, maximum_interval=2.0)
    assert {policy.delay_after(n) for n in range(1, 20)} == {0.2}


def test_backoff_stays_capped_after_very_many_attempts() -> None:
    # A flow may allow thousands of attempts; the delay must stay at the cap, not overflow.
    policy = RetryPolicy(max_attempts=5000, maximum_interval=30.0)
    assert policy.delay_after(5000) == 30.0


# ---------------------------------------------------------------------------- finding flows


@pytest.fixture
def spikes(write_flow: WriteFlow, sample_path: Path) -> Path:
    """A spikes folder with the sample and the minimal flow (as `mini`)."""
    write_flow(name="spikes/partner_approval.toml",
               text=sample_path.read_text(encoding="utf-8"))
    return write_flow(name="spikes/mini.toml").parent


def test_a_name_resolves_in_the_spikes_folder(spikes: Path) -> None:
    flow = load_flow("mini", spikes_dir=spikes)
    assert flow.name == "mini"
    assert flow.source == str((spikes / "mini.toml").resolve())


def test_a_name_resolves_in_spikes_even_beside_a_folder_of_that_name(
    spikes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mini").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_flow("mini", spikes_dir=spikes).name == "mini"


@pytest.mark.parametrize("as_path", [True, False])
def test_a_path_loads_without_a_spikes_folder(write_flow: WriteFlow, as_path: bool) -> None:
    path = write_flow(name="elsewhere/custom_name.toml")
    assert load_flow(path if as_path else str(path)).name == "mini"


def test_an_unknown_name_lists_the_flows_found(spikes: Path) -> None:
    message = raises_flow_error(lambda: load_flow("minni", spikes_dir=spikes))
    assert_mentions(message, ["no flow 'minni'", f"Flows in {spikes}: mini, partner_approval.",
                              "module:ATTRIBUTE", "`graduate flows` lists them"])


def test_an_unknown_name_without_spikes_folder_says_what_to_give(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.chdir(tmp_path)
    message = raises_flow_error(lambda: load_flow("minni"))
    assert_mentions(message, ["no flow 'minni'", "a .toml file", "module:ATTRIBUTE"])
    assert "Flows in" not in message


@pytest.mark.parametrize("looked_at", ["is_file", "exists"])
def test_a_folder_that_cannot_be_read_is_said_so_not_taken_for_no_flow(
        spikes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, looked_at: str) -> None:
    """Review: a permission error (a folder without search permission; tests run as
    root here, whom permissions do not stop, so the error is raised by a stand-in) read
    as "no flow named ...". A name too long for the file system still reads as one."""
    monkeypatch.chdir(tmp_path)
    real = getattr(Path, looked_at)

    def refused(self: Path) -> bool:
        if self.name in ("minni", "minni.toml"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return bool(real(self))

    monkeypatch.setattr(Path, looked_at, refused)
    message = raises_flow_error(lambda: load_flow("minni", spikes_dir=spikes))
    assert "no flow" not in message
    assert_mentions(message, ["cannot look for a flow at", "minni", "Permission denied",
                              "check that its folder can be read"])
    long_name = "m" * 300
    assert "no flow 'mmm" in raises_flow_error(lambda: load_flow(long_name,
                                                                 spikes_dir=spikes))


def test_discover_loads_what_it_can_and_keeps_the_errors(
    spikes: Path, write_flow: WriteFlow
) -> None:
    write_flow([("version = 1", "version = 0")], name="spikes/broken.toml")

    found = {path.name: result for path, result in discover(spikes)}

    assert list(found) == ["broken.toml", "mini.toml", "partner_approval.toml"]
    assert isinstance(found["broken.toml"], FlowError)
    assert "version must be a whole number" in str(found["broken.toml"])
    assert isinstance(found["mini.toml"], Flow)
    assert isinstance(found["partner_approval.toml"], Flow)
    assert found["partner_approval.toml"].name == "partner_approval"


# ---------------------------------------------------------------------------- Python flows

FLOW_MODULE = """\
from graduate.flow import (
    ApprovalClass, Flow, ReversibilityClass, SensitivityClass, Step, SystemSpec,
)

FLOW = Flow(
    name="py_flow", version=2, description="built in Python",
    approval_class=ApprovalClass.A0, reversibility_class=ReversibilityClass.R0,
    sensitivity_class=SensitivityClass.S0,
    nodes=(Step("ping", "crm.ping", compensation="crm.unping"),),
    systems=(SystemSpec("crm", honours_idempotency=False),),
)
BROKEN = Flow(
    name="py_broken", version=1, description="",
    approval_class=ApprovalClass.A0, reversibility_class=ReversibilityClass.R0,
    sensitivity_class=SensitivityClass.S0,
    nodes=(Step("ping", "crm.ping"),), systems=(),
)
NOT_A_FLOW = 42
"""


@pytest.fixture
def flow_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of an importable module holding Python-built flows."""
    name = f"user_flows_{uuid.uuid4().hex}"
    folder = tmp_path / "pymods"
    folder.mkdir()
    (folder / f"{name}.py").write_text(textwrap.dedent(FLOW_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(folder)
    yield name
    sys.modules.pop(name, None)


def test_a_python_flow_loads_from_module_and_attribute(flow_module: str) -> None:
    flow = load_flow(f"{flow_module}:FLOW")

    assert flow.name == "py_flow"
    assert flow.version == 2
    assert flow.steps == (Step("ping", "crm.ping", compensation="crm.unping"),)
    assert flow.systems == (SystemSpec("crm", honours_idempotency=False),)
    assert flow.source == f"{flow_module}:FLOW"


def test_a_python_flow_is_validated_too(flow_module: str) -> None:
    message = raises_flow_error(lambda: load_flow(f"{flow_module}:BROKEN"))
    assert_mentions(message, ["flow 'py_broken'", "step 'ping'", "add [systems.crm]"])


@pytest.mark.parametrize("attribute", ["NOT_A_FLOW", "MISSING"])
def test_a_python_reference_must_point_at_a_flow(flow_module: str, attribute: str) -> None:
    message = raises_flow_error(lambda: load_flow(f"{flow_module}:{attribute}"))
    assert_mentions(message, [f"'{flow_module}:{attribute}' is not a graduate.flow.Flow",
                              "point at a Flow object"])


def test_a_python_reference_to_a_missing_module_names_it() -> None:
    message = raises_flow_error(lambda: load_flow("no_such_module_for_graduate:FLOW"))
    assert_mentions(message, ["cannot import 'no_such_module_for_graduate'",
                              "for flow 'no_such_module_for_graduate:FLOW'"])
