"""What every command shares: the consoles and the settings the root options resolved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from graduate.config import Settings, load_settings

# Logs and pipes get a wide console, so that tables in CI output are not squeezed.
console = Console(highlight=False)
if not console.is_terminal:
    console.width = max(console.width, 160)
err_console = Console(stderr=True, highlight=False)


def print_error(message: str, label: str = "error") -> None:
    """The one place the command line prints an error: as plain text, never as markup,
    so that brackets in a message ([tool.graduate], [[nodes]], a name) reach the user."""
    err_console.print(Text.assemble((f"{label}:", "bold red"), " ", message), soft_wrap=True)


def given_path(text: str) -> Path:
    """A file or folder typed on the command line (every path option's parser). An empty
    one is refused: Path("") is the current folder, which nobody means by ''."""
    if not text.strip():
        raise typer.BadParameter("the path is empty; give a file or folder")
    return Path(text)


def settings(ctx: typer.Context) -> Settings:
    """Settings from the root options (flags), the environment and pyproject.toml."""
    overrides: dict[str, Any] = ctx.find_root().obj or {}
    return load_settings(overrides)


# One option, read the same by `run`, `chaos` and `matrix` (see `graduate.timescale`).
TimeScaleOption = Annotated[str, typer.Option(
    "--time-scale",
    help="Compress every duration of the flow (step work and timeouts, retry intervals, "
         "wait deadlines, timers) for the run: FLOW_TIME=RUN_TIME such as 1h=1s (an hour "
         "of the flow in a second), or a factor such as 3600. Engine settings (visibility "
         "and heartbeat timeouts) and --timeout stay in real seconds. Default: real time.")]


# One option, read the same by `run`, `chaos` and `matrix` (see `Flow.for_instance`).
InputOption = Annotated[list[str] | None, typer.Option(
    "--input",
    help="Give every instance a flow input declared in its \\[input] table: NAME=ITEM,ITEM "
         "such as parties=acme,bidco,counsel (each party then gets its own grant_access "
         "step, key and compensation). Repeat for several inputs; an input not given "
         "takes its default.")]
