"""graduate: run one business flow on Celery and on Temporal, break it, and prove what happened.

The library is engine-neutral: flows (`graduate.flow`), the ledger of effects
(`graduate.ledger`) and the services they run on (`graduate.services`). Engines
live behind one protocol in `graduate.adapters`.
"""

from graduate.errors import GraduateError
from graduate.instrument import effect

__all__ = ["GraduateError", "effect"]
__version__ = "0.1.0"
