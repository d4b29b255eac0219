"""What graduate checks of a history file before the SDK's replayer sees it.

SDK core assumes a history came from a server: on an event of no type, or events out of
order, a thread of its panics and the replay never ends (no Ctrl-C stops it); a gap or a
repeated event ID it reports as a non-determinism error, which `graduate replay` would
show as a deploy that breaks. A file edited, cut or assembled by hand is refused here
instead, naming the event and what is wrong with it.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from graduate.errors import ConfigError

_STARTED = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
# References to an earlier event of the same history (others, such as a parent's
# initiated event, point into another workflow's history).
_EARLIER = ("scheduled_event_id", "started_event_id", "initiated_event_id")


def check_history(history: WorkflowHistory, source: str,
                  workflow_type: str | None = None) -> None:
    """Refuse `history` (read from `source`) unless its events are numbered 1, 2, 3...
    in order, each has a known type and that type's attributes, only the first is the
    workflow's start, and each reference to another event points back; and, given
    `workflow_type`, unless it is a history of that workflow type."""
    fix = ("export it again with `temporal workflow show --workflow-id ID --output json` "
           "(or from the run's .graduate/evidence/histories/), unedited")
    for number, event in enumerate(history.events, 1):
        at = f"{source} is not a whole Temporal workflow history: event {number}"
        if event.event_id != number:
            raise ConfigError(f"{at} has eventId {event.event_id}; a history numbers its "
                              f"events 1, 2, 3... in order (cut, reordered or merged?); {fix}")
        name = EventType.Name(event.event_type)
        if event.event_type == EventType.EVENT_TYPE_UNSPECIFIED:
            raise ConfigError(f"{at} has no eventType, or one this SDK does not know; {fix}")
        expected = name.removeprefix("EVENT_TYPE_").lower() + "_event_attributes"
        if event.WhichOneof("attributes") != expected:
            raise ConfigError(f"{at} is {name} but carries "
                              f"{event.WhichOneof('attributes') or 'no attributes'}; {fix}")
        if (event.event_type == _STARTED) != (number == 1):
            raise ConfigError(f"{at} is {name}: a history opens with the workflow's start, "
                              f"and only once; {fix}")
        attributes = getattr(event, expected)
        for field, value in attributes.ListFields():
            if field.name in _EARLIER and not 0 < value < number:
                raise ConfigError(f"{at} ({name}) has {field.name} {value}, which is not an "
                                  f"earlier event; {fix}")
    if workflow_type is not None and history.events:
        found = history.events[0].workflow_execution_started_event_attributes.workflow_type
        if found.name != workflow_type:
            raise ConfigError(f"{source} is a history of workflow type {found.name!r}, not of "
                              f"graduate's flow workflow ({workflow_type}); give the "
                              "histories of this flow's runs, or replay against the app "
                              "whose code runs that workflow")
