"""Shared fixtures for the unit tests: one minimal valid flow, its variants, requests,
and the ledger rows of instance i1 of the mini flow that the checker's tests judge."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from graduate.flow import Flow, InstanceRequest, load_flow
from graduate.ledger import EffectKind, EffectRecord, InstanceRecord, Ledger, Outcome

# The sample flow the harness mechanics were first tested on (create_record,
# request_approval, approval, activate, notify): kept as a fixture now that
# spikes/partner_approval.toml is the pilot as Dealix specifies it.
SAMPLE = Path(__file__).resolve().parents[1] / "flows" / "partner_approval_sample.toml"
# The pilot itself.
PILOT = Path(__file__).resolve().parents[2] / "spikes" / "partner_approval.toml"

# The wait node on its own, so that a variant can drop it with one edit.
WAIT_NODE = """\
[[nodes]]
wait = "approval"
deadline = "1h"
"""

# The smallest flow that still has every kind of item the validator looks at: two
# systems (one honouring idempotency keys, one not), a step with a retry table and a
# compensation, a wait, and a step without compensation. It is written to a file whose
# name differs from the flow's, so that a message naming "mini" names the flow, not the
# file.
MINI_FLOW = f"""\
[flow]
name = "mini"
version = 1
description = "A minimal valid flow."
approval_class = "A1"
reversibility_class = "R1"
sensitivity_class = "S1"

[systems.crm]
honours_idempotency = true

[systems.mail]
honours_idempotency = false

[[nodes]]
step = "create"
effect = "crm.create"
timeout = "10s"
retry = {{ max_attempts = 3, initial_interval = "1s", maximum_interval = "10s" }}

{WAIT_NODE}
[[nodes]]
step = "notify"
effect = "mail.send"

[compensations]
create = "crm.delete"
"""

Edit = tuple[str, str]


def variant(edits: Sequence[Edit] = (), append: str = "") -> str:
    """MINI_FLOW with each (old, new) edit applied once and `append` added at the end.

    Every `old` must occur exactly once, so a variant can never silently equal the base.
    """
    text = MINI_FLOW
    for old, new in edits:
        assert text.count(old) == 1, f"edit target {old!r} must occur exactly once"
        text = text.replace(old, new)
    return text + append


@pytest.fixture
def write_flow(tmp_path: Path) -> Callable[..., Path]:
    """Write a variant of MINI_FLOW (or `text` verbatim) to a TOML file; return its path.

    Arguments: `edits`, a sequence of (old, new) replacements; `append`, text to add at the
    end (it lands in [compensations] unless it opens a table); `text`, to write instead of
    a variant; `name`, the file's path relative to tmp_path.
    """

    def write(edits: Sequence[Edit] = (), append: str = "", *, text: str | None = None,
              name: str = "flow_file.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(variant(edits, append) if text is None else text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def mini_flow(write_flow: Callable[..., Path]) -> Flow:
    return load_flow(write_flow())


@pytest.fixture
def sample_path() -> Path:
    """The sample flow partner_approval was before it became the pilot."""
    return SAMPLE


@pytest.fixture
def sample_flow(sample_path: Path) -> Flow:
    return load_flow(sample_path)


@pytest.fixture
def make_request() -> Callable[..., InstanceRequest]:
    """Build an InstanceRequest whose IDs all derive from `number`, unless given."""

    def make(number: int = 1, *, run_id: str = "run1", tenant_id: str = "tenant1",
             date: str = "20250102") -> InstanceRequest:
        return InstanceRequest(
            instance_id=f"{run_id}-inst{number}", run_id=run_id, tenant_id=tenant_id,
            entity_id=f"entity{number}", date=date, correlation_id=f"corr-{run_id}-{number}",
            trace_id=f"trace-{run_id}-{number}",
        )

    return make


@pytest.fixture
def ledger_path(tmp_path: Path) -> str:
    return str(tmp_path / "l.sqlite3")


@pytest.fixture
def ledger(ledger_path: str) -> Iterator[Ledger]:
    opened = Ledger(ledger_path)
    yield opened
    opened.close()


def instance_row(engine: str, started_at: float) -> InstanceRecord:
    """Instance i1 of the mini flow, as the ledger records its start."""
    return InstanceRecord(instance_id="i1", run_id="r", flow="mini", flow_source="",
                          engine=engine, tenant_id="t", entity_id="e", date="20250101",
                          correlation_id="corr", trace_id="trace", started_at=started_at)


def effect_row(step: str, started_at: float, *, effect: str, engine: str, key: str,
               kind: EffectKind = "effect", outcome: Outcome = Outcome.APPLIED,
               attempt: int = 1, took: float = 0.01) -> EffectRecord:
    """One call of instance i1's `step`, as `graduate.effect` records it."""
    return EffectRecord(id=0, run_id="r", flow="mini", instance_id="i1", step=step,
                        effect=effect, kind=kind, attempt=attempt, idempotency_key=key,
                        correlation_id="corr", trace_id="trace", engine=engine,
                        worker_pid=7, started_at=started_at, finished_at=started_at + took,
                        outcome=outcome)
