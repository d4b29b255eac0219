"""The inventory as SARIF 2.1.0, so that code hosts show hazards inline on the code.

Hazards are results of their rule; flows recommended to graduate or to spike first are
notes on their entry task; skipped code is a tool execution notification.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def to_sarif(found: Inventory, version: str) -> str:
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
         "message": {"text": f"{h.why}. Fix: {h.fix}."}, "locations": [_location(h.location)]}
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
            "locations": [_location(flow.location)]})
    root = Path(found.root).resolve()
    base = root if root.is_dir() else root.parent
    run = {
        "tool": {"driver": {"name": "graduate inventory", "version": version,
                            "rules": rules}},
        "originalUriBaseIds": {"SRCROOT": {"uri": base.as_uri() + "/"}},
        "invocations": [{
            "executionSuccessful": True,
            "toolExecutionNotifications": [
                {"level": "warning", "message": {"text": s.reason},
                 "locations": [_location(s.location)]} for s in found.skipped],
        }],
        "results": results,
    }
    return json.dumps({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2)


def _location(location: Location) -> dict[str, Any]:
    return {"physicalLocation": {
        "artifactLocation": {"uri": location.path, "uriBaseId": "SRCROOT"},
        "region": {"startLine": max(location.line, 1)}}}
