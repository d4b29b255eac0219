"""The services a run needs: a Temporal server, a Celery broker, and databases.

One resolver (`graduate.services.resolver`) decides where each comes from: an external
service given by flag, environment variable or `[tool.graduate]` is used as given; the
rest come from its strategy: local processes from the virtual environment on free ports
(`graduate.services.local`, the default), nothing (external), or Docker containers.
"""

from graduate.services.model import Services, TemporalTarget
from graduate.services.provider import open_services
from graduate.services.resolver import Needs, Resolver, make_resolver

__all__ = ["Needs", "Resolver", "Services", "TemporalTarget", "make_resolver", "open_services"]
