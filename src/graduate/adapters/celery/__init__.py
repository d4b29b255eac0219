"""The Celery engine, with two strategies: `chain` (linked tasks) and `state-machine`.

`celery` and `kombu` are imported only in this package; nothing outside it sees their types.
"""

from graduate.adapters.celery.engine import CeleryEngine

__all__ = ["CeleryEngine"]
