"""Nobody answers a human wait, so its deadline passes."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultPlan, find_wait
from graduate.flow import Flow

if TYPE_CHECKING:
    from graduate.runner import RunOptions

NAME = "wait-timeout"


class WaitTimeout(Fault):
    name = NAME
    description = "nobody answers a human wait, so its deadline passes"
    events = (FAULT_FIRED,)
    expects_resume = False  # no step is in flight while an instance waits
    group = "wait"
    needs_point = False
    lets_waits_expire = True

    def check(self, plan: FaultPlan, flow: Flow) -> FaultPlan:
        wait = find_wait(flow, plan.step)
        return FaultPlan(self, step=wait.name, point="during-wait",
                         restart_delay=plan.restart_delay)

    def adjust(self, plan: FaultPlan, flow: Flow, run: RunOptions) -> RunOptions:
        signal = find_wait(flow, plan.step).signal
        return replace(run, decisions={k: v for k, v in run.decisions.items() if k != signal})

    def fire(self, context: FaultContext) -> None:
        wait = find_wait(context.session.flow, context.plan.step)
        context.timeline.add(FAULT_FIRED, f"nobody answers {wait.name}; its deadline is "
                                          f"{wait.deadline:g}s")


FAULT = WaitTimeout()
