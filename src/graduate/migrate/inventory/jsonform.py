"""The inventory as JSON, for scripts and for other tools to read back."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from graduate.migrate.inventory.model import Inventory

SCHEMA = "graduate.inventory/1"


def to_dict(found: Inventory) -> dict[str, Any]:
    data = asdict(found)
    data["settings"] = dict(found.settings)
    for flow in data["flows"]:
        flow["workflow_criteria"] = sum(1 for s in flow["scores"] if s["leans"] == "workflow")
    return {"schema": SCHEMA, **data}


def to_json(found: Inventory) -> str:
    return json.dumps(to_dict(found), indent=2, ensure_ascii=False)
