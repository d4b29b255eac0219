"""Celery's context for `graduate.effect`: graduate's correlation header, carried by signals.

Celery keeps no record of which business instance a task serves, so graduate carries it
in a message header of its own. Two signal handlers, installed in the processes graduate
runs (`install()`), carry it without any change to the application's calls:

- `before_task_publish` puts the correlation of the code that publishes onto the
  message. Inside a task that is the task's own, so it reaches every message the task
  sends: `apply_async` and `delay`, the next task of a chain (published by the worker
  when the task ends), a group's and a chord's members, a chord's body (published by the
  last member) and a retry. A client that starts an instance does it inside
  `graduate.instrument.propagating`.
  When the app traces with OpenTelemetry, the publisher's trace context goes with it
  (a W3C traceparent, unless the app's own instrumentation put one there): the harness
  starts an instance under the instance's trace without tracing itself, and
  opentelemetry-instrumentation-celery in the worker continues that trace instead of
  starting a new one at the instance's first task.
- `task_prerun` reads the header of the message being run and makes it the task's
  correlation until `task_postrun`.

A message sent where no correlation is current (from a thread the task started, which
does not inherit its context) carries none: its effects are recorded without an
instance, which is how the checker sees a broken propagation.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any

from celery import current_task
from celery.signals import before_task_publish, task_postrun, task_prerun

from graduate.instrument import Correlation, EngineCall, inject_trace, propagated, propagating

ENGINE_NAME = "celery"
HEADER = "graduate_correlation"
_DISPATCH_UID = "graduate.instrument"
# The correlation scope of each task running in this process, by task ID.
_scopes: dict[str, ExitStack] = {}


def install() -> None:
    """Connect graduate's handlers in this process (once; connecting again is harmless)."""
    before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_DISPATCH_UID)
    task_prerun.connect(_on_prerun, weak=False, dispatch_uid=_DISPATCH_UID)
    task_postrun.connect(_on_postrun, weak=False, dispatch_uid=_DISPATCH_UID)


def current() -> EngineCall | None:
    """The task this code runs in, if any (the context provider of this adapter)."""
    request = getattr(current_task, "request", None)
    if request is None or request.id is None:
        return None
    correlation = propagated()
    return EngineCall(
        engine=ENGINE_NAME,
        instance_id=correlation.instance_id if correlation is not None else "",
        attempt=int(request.retries or 0) + 1, execution_id=str(request.id))


def instance_of(request: Any) -> str | None:
    """The instance whose correlation header a worker's request carries, if any."""
    return instance_in(getattr(request, "request_dict", None) or {})


def instance_in(headers: Mapping[str, Any]) -> str | None:
    """The instance whose correlation header `headers` carry (a worker's request, or a
    message as the broker stores it), if any."""
    correlation = Correlation.from_header(headers.get(HEADER))
    return correlation.instance_id if correlation is not None else None


def _on_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    correlation = propagated()
    if correlation is None or headers is None:
        return
    if HEADER not in headers:
        headers[HEADER] = correlation.to_header()
    inject_trace(headers)


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    correlation = Correlation.from_header(task.request.get(HEADER))
    if correlation is None:
        return
    scope = ExitStack()
    scope.enter_context(propagating(correlation))
    _scopes[task_id] = scope


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    scope = _scopes.pop(task_id, None) if task_id is not None else None
    if scope is not None:
        scope.close()
