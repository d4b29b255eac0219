"""`pytest -p tests.engines.toy.plugin`: the toy engine is registered, through the public
registry, before any test module asks `engine_names()` which engines to run."""

from __future__ import annotations

import pytest

from graduate.adapters import register
from tests.engines.toy import TOY


def pytest_configure(config: pytest.Config) -> None:
    register(TOY)
