"""graduate: run one business flow on Celery and on Temporal, break it, and prove what happened.

The library is engine-neutral: flows (`graduate.flow`), the ledger of effects
(`graduate.ledger`) and the services they run on (`graduate.services`). Engines
live behind one protocol in `graduate.adapters`.
"""

from graduate.errors import GraduateError
from graduate.instrument import effect
from graduate.migrate.inventory import Inventory, inventory

__all__ = ["GraduateError", "Inventory", "effect", "inventory"]
__version__ = "0.1.0"
