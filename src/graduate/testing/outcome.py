"""What a chaos run did, as objects for tests, with failure messages in the user's terms."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from graduate import ChaosResult, InstanceVerdict, Verdict
from graduate.check import duplicate_failure
from graduate.flow import Flow, declared_name

_TIMES = {0: "never ran", 1: "ran once", 2: "ran twice"}


@dataclass(frozen=True)
class ChaosOutcome:
    """The verdicts of one chaos run, with assertions that explain themselves."""

    result: ChaosResult
    flow: Flow

    @property
    def passed(self) -> bool:
        """Nothing lost, stuck or failed; no unabsorbed duplicate; exact resumes; and the
        fault fired and caught an instance in flight (see `graduate.check.judge_run`)."""
        return self.result.verdict.passed

    @property
    def instances(self) -> tuple[InstanceVerdict, ...]:
        return self.result.instances

    def verdicts(self) -> list[Verdict]:
        return [i.verdict for i in self.instances]

    def explain(self) -> str:
        """What happened to every instance, step by step, with its correlation ID."""
        result = self.result
        lines = [f"{result.flow} on {result.engine} under {result.plan.describe()} "
                 f"(profile {result.profile}; run {result.run_id}):"]
        for item in self.instances:
            lines.append(f"- instance {item.instance_id} (correlation {item.correlation_id}, "
                         f"trace {item.trace_id}): {item.verdict.value.upper()}: {item.reason}")
            if (resume := item.resume) is not None:
                how = ("its attempt there was cut short" if resume.interrupted
                       else "held up until the recovery" if resume.held_up
                       else f"paused {resume.point.replace('-', ' ')}")
                went_on = ("continued in the same process" if resume.continued
                           else f"resumed at {resume.resumed_at or 'nothing'}")
                lines.append(f"  was in flight at {resume.in_flight} ({how}); {went_on}"
                             + (f"; ran again: {', '.join(resume.reran)}"
                                if resume.reran else ""))
            if item.starts is not None:
                lines.append(f"  started {item.starts.starts} times: {item.starts.reason}")
            if item.rollback is not None:
                lines.append("  rolled back: " + ("; ".join(item.rollback.problems) or
                                                  "compensated exactly what applied, in "
                                                  "reverse"))
            lines.append(f"  effects: {self._effects(item)}")
        if result.verdict.failures:
            lines.append("required properties that do not hold:")
            lines.extend(f"  - {failure}" for failure in result.verdict.failures)
        if result.evidence is not None:
            lines.append(f"evidence: {result.evidence}")
        return "\n".join(lines)

    def _effects(self, item: InstanceVerdict) -> str:
        parts = []
        for step in self.flow.steps:
            ran = next((e for e in item.effects if e.step == step.name
                        and e.kind == "effect"), None)
            landed = (ran.applied + ran.absorbed) if ran else 0
            text = f"{step.name} {_TIMES.get(landed, f'ran {landed} times')}"
            if ran is not None and ran.absorbed:
                text += f" ({ran.absorbed} absorbed by its idempotency key)"
            parts.append(text)
        undone = [e.step for e in item.effects if e.kind == "compensation" and e.applied]
        if undone:
            parts.append(f"compensated: {', '.join(undone)}")
        return ", ".join(parts)

    def _fail(self, what: str) -> None:
        __tracebackhide__ = True
        raise AssertionError(f"{what}\n{self.explain()}")

    def assert_ok(self, *, tolerate_duplicates_of: Collection[str] = ()) -> None:
        """Every required property holds (what `graduate adr promote` demands).

        `tolerate_duplicates_of` names steps, as the flow declares them (`grant_access`
        stands for each item's `grant_access[acme]`), whose unabsorbed duplicate the
        test accepts: a step whose system takes no key, run beside others, is doubled
        when a crash anywhere catches one of its siblings just after its effect, and
        whether that happens is timing, not the engine. Every other property, and any
        other step's duplicate, still fails."""
        __tracebackhide__ = True
        declared = {declared_name(s.name) for s in self.flow.steps}
        if unknown := sorted(set(tolerate_duplicates_of) - declared):
            raise ValueError(f"flow {self.flow.name!r} has no step {', '.join(unknown)}; "
                             f"its steps: {', '.join(sorted(declared))}")
        tolerated = {duplicate_failure(item, effect) for item in self.instances
                     for effect in item.effects if effect.unabsorbed_duplicates
                     and declared_name(effect.step) in tolerate_duplicates_of}
        if any(f not in tolerated for f in self.result.verdict.failures):
            self._fail("the flow did not survive the fault")

    def assert_no_lost_commitments(self) -> None:
        __tracebackhide__ = True
        lost = [i.instance_id for i in self.instances
                if i.verdict in (Verdict.LOST, Verdict.STUCK)]
        if lost:
            self._fail(f"commitments lost or stuck: {', '.join(lost)}")

    def assert_no_duplicates(self) -> None:
        """No effect changed the world twice (absorbed repeats are fine)."""
        __tracebackhide__ = True
        twice = [i.instance_id for i in self.instances if i.unabsorbed_duplicates]
        if twice:
            self._fail(f"effects applied more than once: {', '.join(twice)}")

    def assert_resumed_at_step_in_flight(self) -> None:
        __tracebackhide__ = True
        off = [i.instance_id for i in self.instances
               if i.resume is not None and not i.resume.exact]
        if off:
            self._fail(f"did not resume at the step in flight: {', '.join(off)}")

    def assert_all(self, verdict: Verdict | str) -> None:
        """Every instance ended with `verdict` (completed, compensated, ...)."""
        __tracebackhide__ = True
        wanted = Verdict(verdict)
        other = [i.instance_id for i in self.instances if i.verdict is not wanted]
        if other:
            self._fail(f"expected every instance {wanted.value}; not: {', '.join(other)}")
