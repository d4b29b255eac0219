"""The inventory as Markdown: flows ranked with their reasons, then hazards, findings and
what was skipped. Fit for a pull request comment or a design note."""

from __future__ import annotations

from graduate.migrate.inventory.model import FindingKind, FlowCandidate, Inventory


def to_markdown(found: Inventory) -> str:
    lines = [f"# Celery inventory of `{found.root}`", "",
             f"{found.files} Python files read; {len(found.findings)} findings, "
             f"{len(found.hazards)} hazards, {len(found.flows)} flows, "
             f"{len(found.skipped)} skipped.", ""]
    if found.settings:
        lines += ["Judged against: " + "; ".join(f"{k} {v}" for k, v in found.settings), ""]
    lines += ["## Flows, ranked", "",
              "| # | flow | recommendation | class | workflow criteria | hazards | steps |",
              "|---|---|---|---|---|---|---|"]
    for number, flow in enumerate(found.flows, 1):
        lines.append(f"| {number} | `{flow.name}` | {flow.recommendation} | "
                     f"{flow.classification} | {flow.workflow_criteria}/4 | {len(flow.hazards)} "
                     f"| {' → '.join(_cell(s.task) for s in flow.steps)} |")
    lines.append("")
    for flow in found.flows:
        lines += _flow(flow)
    lines += ["## Hazards", ""]
    if not found.hazards:
        lines += ["None found.", ""]
    for hazard in found.hazards:
        lines += [f"- **{hazard.severity}** `{hazard.rule}` at `{hazard.location}` "
                  f"({hazard.task}): {hazard.why}. *Fix:* {hazard.fix}."]
    lines += ["", "## Findings", ""]
    for kind in FindingKind:
        items = found.of_kind(kind)
        if items:
            lines += [f"### {kind.value} ({len(items)})", ""]
            lines += [f"- `{f.location}` {f.name}" + (f": {f.detail}" if f.detail else "")
                      for f in items]
            lines.append("")
    lines += ["## Skipped", ""]
    lines += [f"- `{s.location}` {s.reason}" for s in found.skipped] or ["Nothing."]
    return "\n".join(lines) + "\n"


def _flow(flow: FlowCandidate) -> list[str]:
    lines = [f"### `{flow.name}`: {flow.recommendation}", "",
             f"Entry `{flow.entry}` at `{flow.location}`; {flow.classification} "
             f"({'; '.join(flow.reasons)}).", ""]
    for score in flow.scores:
        lines.append(f"- **{score.criterion}** leans to {score.leans}: {score.summary}")
        lines += [f"  - `{e.location}` {e.text}" for e in score.evidence]
    if flow.hardening:
        lines += ["", "Hardening:"] + [f"- {item}" for item in flow.hardening]
    lines.append("")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
