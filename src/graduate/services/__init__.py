"""The services a run needs: a Temporal server, a Celery broker, and databases.

By default graduate starts its own Temporal dev server and Redis from the virtual
environment on free ports (`graduate.services.local`); any of them can instead be an
external service given by flag, environment variable or `[tool.graduate]`.
"""

from graduate.services.model import Services, TemporalTarget
from graduate.services.provider import open_services

__all__ = ["Services", "TemporalTarget", "open_services"]
