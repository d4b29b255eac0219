"""Where the services of a run are: plain values that workers receive as arguments."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from graduate.redaction import redact_password


@dataclass(frozen=True)
class TemporalTarget:
    """A Temporal frontend: local dev server, self-hosted cluster or Temporal Cloud."""

    address: str
    namespace: str = "default"
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    api_key: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert or self.tls_ca or self.api_key)

    def describe(self) -> dict[str, Any]:
        described = asdict(self)
        described["api_key"] = "***" if self.api_key else None
        return described


@dataclass(frozen=True)
class Services:
    """The resolved services of one command; None where the command needs none."""

    temporal: TemporalTarget | None
    broker_url: str | None
    result_backend_url: str | None
    ledger_url: str
    app_db_url: str
    local: tuple[str, ...] = ()  # which of them graduate started itself

    def describe(self) -> dict[str, Any]:
        """For output and evidence: every secret redacted."""
        return {
            "temporal": self.temporal.describe() if self.temporal else None,
            "broker_url": redact_password(self.broker_url) if self.broker_url else None,
            "result_backend_url": (redact_password(self.result_backend_url)
                                   if self.result_backend_url else None),
            "ledger_url": redact_password(self.ledger_url),
            "app_db_url": redact_password(self.app_db_url),
            "local": list(self.local),
        }
