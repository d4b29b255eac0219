"""Inputs and results that cross the Temporal server: plain dataclasses, no SDK types."""

from __future__ import annotations

from dataclasses import dataclass, field

from graduate.flow import InstanceRequest

WORKFLOW_NAME = "GraduateFlow"
PERMANENT_ERROR_TYPE = "PermanentEffectError"
TRANSIENT_ERROR_TYPE = "TransientEffectError"


def task_queue(flow_name: str, run_id: str) -> str:
    """One task queue per flow and run: a run's workers never take an earlier run's
    leftovers (a workflow stuck on changed code, say)."""
    return f"graduate.{flow_name}.{run_id}" if run_id else f"graduate.{flow_name}"


def deployment_name(flow_name: str, run_id: str) -> str:
    """The worker deployment a run's workers belong to under worker versioning (a name
    without dots: the SDK writes a version as `DEPLOYMENT.BUILD_ID`)."""
    return "-".join(("graduate", flow_name.replace(".", "-"), *([run_id] if run_id else [])))


def build_id(flow_version: int) -> str:
    """The build ID of the workers that run version `flow_version` of a flow."""
    return f"v{flow_version}"


@dataclass
class FlowInput:
    flow: str
    request: InstanceRequest
    # Seconds without a heartbeat after which the server deems an activity's worker dead
    # and retries it; None is the SDK's default: only start-to-close detects a death.
    heartbeat_timeout: float | None = None
    # Send the memo once per workflow task (`workflow.MEMO_ONCE_PER_TASK`). Every start
    # sets it; an input without it (started before it was added) asks a patch marker.
    memo_once_per_task: bool = False
    # Change the memo only where a wait opens and closes (docs/adr/0014). Every start
    # sets it, with memo_once_per_task; an input without it (started before it was
    # added) keeps a memo change per node passed.
    memo_at_waits: bool = False


@dataclass
class EffectInput:
    flow: str
    request: InstanceRequest
    step: str
    kind: str  # "effect" or "compensation"


@dataclass
class FlowResult:
    outcome: str  # completed, compensated or failed
    done: list[str] = field(default_factory=list)
    reason: str = ""
