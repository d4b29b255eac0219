"""The flows this worker process runs, shared with the workflow sandbox.

The sandbox re-imports workflow modules for every run; this module is passed through
unchanged, so the interpreter sees the flow definition the worker loaded: the
worker's code, which is what a deploy changes.
"""

from __future__ import annotations

from graduate.flow import Flow

_FLOWS: dict[str, Flow] = {}
_PREVIOUS: dict[str, Flow] = {}


def register(flow: Flow, previous: Flow | None = None) -> None:
    """Run `flow`; with `previous`, also keep running instances started on it (the
    versioning guard of a deploy)."""
    _FLOWS[flow.name] = flow
    if previous is None:
        _PREVIOUS.pop(flow.name, None)
    else:
        _PREVIOUS[flow.name] = previous


def previous(name: str) -> Flow | None:
    return _PREVIOUS.get(name)


def get(name: str) -> Flow:
    try:
        return _FLOWS[name]
    except KeyError:
        raise LookupError(f"this worker does not run flow {name!r}; it runs "
                          f"{sorted(_FLOWS)}") from None
