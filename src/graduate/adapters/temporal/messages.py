"""Inputs and results that cross the Temporal server: plain dataclasses, no SDK types."""

from __future__ import annotations

from dataclasses import dataclass, field

from graduate.flow import InstanceRequest

WORKFLOW_NAME = "GraduateFlow"
PERMANENT_ERROR_TYPE = "PermanentEffectError"
TRANSIENT_ERROR_TYPE = "TransientEffectError"


def task_queue(flow_name: str) -> str:
    return f"graduate.{flow_name}"


@dataclass
class FlowInput:
    flow: str
    request: InstanceRequest


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
