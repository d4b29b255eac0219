"""The inventory as SARIF 2.1.0, so that code hosts show hazards inline on the code.

Hazards are results of their rule; flows recommended to graduate or to spike first are
notes on their entry task; skipped code is a tool execution notification.

Code hosts place a result by its path from the root of the repository (GitHub: "a
relative path from the root of the GitHub repository being analyzed"), so when the
folder read lies inside a repository, paths are written from the repository's root:
`graduate inventory src/` reports `src/billing/tasks.py`, not `billing/tasks.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from graduate.migrate.inventory.hazards import RULES
from graduate.migrate.inventory.model import Inventory, Location, Recommendation, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
_FLOW_RULES = {
    Recommendation.GRADUATE: ("flow-graduate",
                              "Flow should graduate to a durable workflow engine"),
    Recommendation.SPIKE_FIRST: ("flow-spike-first",
                                 "Flow should be spiked on a durable workflow engine"),
}


def repository_of(path: Path) -> Path | None:
    """The root of the git repository `path` lies in (a `.git` folder, or the `.git` file
    of a worktree or submodule), if any."""
    start = path.resolve()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        if (folder / ".git").exists():
            return folder
    return None


def to_sarif(found: Inventory, version: str, repository: Path | None = None) -> str:
    """The inventory as a SARIF 2.1.0 log; paths from `repository`'s root when the folder
    read lies inside it (see `repository_of`), else from the folder read."""
    root = Path(found.root).resolve()
    read = root if root.is_dir() else root.parent
    base = read
    if repository is not None and read.is_relative_to(repository.resolve()):
        base = repository.resolve()
    prefix = read.relative_to(base).as_posix()
    prefix = "" if prefix == "." else f"{prefix}/"

    def located(location: Location) -> dict[str, Any]:
        return {"physicalLocation": {
            "artifactLocation": {"uri": quote(prefix + location.path), "uriBaseId": "SRCROOT"},
            "region": {"startLine": max(location.line, 1)}}}

    rules: list[dict[str, Any]] = [
        {"id": rule.id, "name": rule.id, "shortDescription": {"text": rule.title},
         "defaultConfiguration": {"level": _LEVELS[rule.severity]}}
        for rule in RULES
    ] + [
        {"id": rule_id, "name": rule_id, "shortDescription": {"text": title},
         "defaultConfiguration": {"level": "note"}}
        for rule_id, title in _FLOW_RULES.values()
    ]
    index = {rule["id"]: number for number, rule in enumerate(rules)}
    results = [
        {"ruleId": h.rule, "ruleIndex": index[h.rule], "level": _LEVELS[h.severity],
         "message": {"text": f"{h.why}. Fix: {h.fix}."}, "locations": [located(h.location)]}
        for h in found.hazards
    ]
    for flow in found.flows:
        if flow.recommendation not in _FLOW_RULES:
            continue
        rule_id, _ = _FLOW_RULES[flow.recommendation]
        results.append({
            "ruleId": rule_id, "ruleIndex": index[rule_id], "level": "note",
            "message": {"text": f"Flow {flow.name} ({', '.join(s.task for s in flow.steps)}): "
                                f"{flow.recommendation}; {flow.classification} "
                                f"({'; '.join(flow.reasons)})."},
            "locations": [located(flow.location)]})
    run = {
        "tool": {"driver": {"name": "graduate inventory", "version": version,
                            "rules": rules}},
        "originalUriBaseIds": {"SRCROOT": {"uri": base.as_uri() + "/"}},
        "invocations": [{
            "executionSuccessful": True,
            "toolExecutionNotifications": [
                {"level": "warning", "message": {"text": s.reason},
                 "locations": [located(s.location)]} for s in found.skipped],
        }],
        "results": results,
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2)
