"""The Temporal adapter: the only place that imports temporalio."""

from graduate.adapters.temporal.engine import TemporalEngine

__all__ = ["TemporalEngine"]
