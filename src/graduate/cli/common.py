"""What every command shares: the consoles and the settings the root options resolved."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from graduate.config import Settings, load_settings

# Logs and pipes get a wide console, so that tables in CI output are not squeezed.
console = Console(highlight=False)
if not console.is_terminal:
    console.width = max(console.width, 160)
err_console = Console(stderr=True, highlight=False)


def settings(ctx: typer.Context) -> Settings:
    """Settings from the root options (flags), the environment and pyproject.toml."""
    overrides: dict[str, Any] = ctx.find_root().obj or {}
    return load_settings(overrides)
