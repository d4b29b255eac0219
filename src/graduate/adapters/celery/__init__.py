"""The Celery engine, with two strategies: `chain` (linked tasks) and `state-machine`.

`celery` and `kombu` are imported only in this package; nothing outside it sees their
types. Its modules are imported by name (`graduate.adapters.celery.engine`), so that
reading its description does not load Celery.
"""

from graduate.adapters.celery.description import DESCRIPTIONS

__all__ = ["DESCRIPTIONS"]
