"""No fault: the baseline every other cell is compared with."""

from __future__ import annotations

from graduate.chaos.faults import Fault, FaultContext, FaultPlan
from graduate.flow import Flow

NAME = "none"


class NoFault(Fault):
    name = NAME
    description = "no fault: the baseline"
    expects_resume = False  # nothing is interrupted, so there is no resume to judge
    fires = False
    group = "baseline"
    needs_point = False

    def check(self, plan: FaultPlan, flow: Flow) -> FaultPlan:
        return FaultPlan(self)

    def fire(self, context: FaultContext) -> None:
        return None  # the harness never fires it: `fires` is False


FAULT = NoFault()
