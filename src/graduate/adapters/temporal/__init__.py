"""The Temporal adapter: the only place that imports temporalio.

Its modules are imported by name (`graduate.adapters.temporal.engine`), so that reading
`settings` to check a profile, or its description, does not load the SDK.
"""

from graduate.adapters.temporal.description import DESCRIPTIONS

__all__ = ["DESCRIPTIONS"]
