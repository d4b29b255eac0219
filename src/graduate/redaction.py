"""Secrets out of every message, record and report: passwords in URLs, secret settings.

The evidence store redacts the service URLs it records (`redact_password`, which keeps
the user name); every error message and every report redacts again (`redact_url`,
`redact_text`, `redact_value`), because evidence may come from an older graduate, from
an external service whose error message quoted its URL, or from settings a team added.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
SENSITIVE_KEYS = ("password", "passwd", "secret", "api_key", "apikey", "token")

# libpq also takes the password as a query parameter: postgresql://host/db?password=...
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# A user-info part without a colon is often a token alone (https://TOKEN@host).
_BARE_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^/@:]+)@")
_QUERY_SECRET = re.compile(
    r"([?&;][^=&#;]*(?:password|passwd|secret|api_key|apikey|token)[^=&#;]*=)[^&#;\s]*",
    re.IGNORECASE)


def sensitive(key: str) -> bool:
    """Whether a setting named `key` holds a secret."""
    lowered = key.lower().replace("-", "_")
    return any(word in lowered for word in SENSITIVE_KEYS)


def redact_password(url: str) -> str:
    """The URL with any password replaced and the user name kept, for evidence."""
    url = _QUERY_PASSWORD.sub(rf"\1{MASK}", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}" if ":" in credentials else url


def redact_url(url: str) -> str:
    """The URL with every part that may be a secret replaced: passwords, secret query
    parameters, and a user-info part alone (often a token)."""
    url = _QUERY_SECRET.sub(rf"\1{MASK}", redact_password(url))
    return _BARE_USERINFO.sub(rf"\1{MASK}@", url)


def redact_text(text: str) -> str:
    """`text` with the secrets of every URL in it replaced."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


def redact_value(value: Any, key: str = "") -> Any:
    """A copy of a JSON value with every secret replaced, at any depth."""
    if key and sensitive(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
