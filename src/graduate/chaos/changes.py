"""Changed versions of a flow, for the deploy-change fault.

Both changes touch steps that instances in flight have already passed, which is where
a deploy hurts: a workflow engine that replays history meets commands that no longer
match it, and a hand-built state machine finds its cursor pointing somewhere else.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, TypeAlias, get_args

from graduate.errors import ConfigError
from graduate.flow import Flow, Step

Change: TypeAlias = Literal["reorder", "add-step"]
CHANGES: tuple[str, ...] = get_args(Change)


def changed_flow(flow: Flow, change: str) -> Flow:
    """`flow` one version on, with its first two steps swapped or a step added first."""
    if change not in CHANGES:
        raise ConfigError(f"unknown change {change!r}; choose one of: {', '.join(CHANGES)}")
    nodes = list(flow.nodes)
    steps = [i for i, node in enumerate(nodes) if isinstance(node, Step)]
    if change == "reorder":
        if len(steps) < 2:
            raise ConfigError(f"flow {flow.name!r} has fewer than two steps to reorder; use "
                              "--change add-step")
        first, second = steps[0], steps[1]
        nodes[first], nodes[second] = nodes[second], nodes[first]
    else:
        template = flow.steps[0]  # the flow may begin with a parallel group
        audit = Step(name="audit_before_deploy", effect=f"{template.system}.audit",
                     timeout=template.timeout, retry=template.retry)
        nodes.insert(0, audit)
    return replace(flow, version=flow.version + 1, nodes=tuple(nodes), source="")
