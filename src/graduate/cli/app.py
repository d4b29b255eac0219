"""The root of the command line, and `main()`, which turns errors into exit codes.

Exit codes: 0 success; 1 the command ran but its outcome is negative (an instance
did not finish as the flow intends); 2 bad input or an unusable service, with a
message that says what to fix; 130 interrupted (every process started is stopped).
"""

from __future__ import annotations

import errno
import importlib
import os
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperGroup
from typer.models import CommandInfo

from graduate.cli.common import err_console, print_error
from graduate.errors import GraduateError
from graduate.processes import leave

# The commands, by name: the module under graduate.cli that defines each, and in it the
# command's function or, for a group of commands, its Typer. A module is imported when
# its command runs (or the root's help lists them all): a `graduate` process loads what
# its own command needs, not every command's modules.
COMMANDS = {
    "demo": ("demo", "demo"), "flows": ("flows", "flows"), "run": ("run", "run"),
    "signal": ("signal_cmd", "signal_instance"), "chaos": ("chaos", "chaos"),
    "matrix": ("chaos", "matrix"), "report": ("report", "report"),
    "inventory": ("inventory", "inventory"), "scaffold": ("scaffold", "scaffold"),
    "compare": ("compare", "compare"), "replay": ("replay", "replay"),
    "bench": ("bench", "bench"), "worker": ("worker", "worker"), "env": ("env", "app"),
    "adr": ("adr", "app"),
}


SHOWN = 100  # the longest path a message shows whole


def _shortened(path: object) -> str:
    """`path` quoted for a message, its middle cut out when long: a name too long for
    the file system may run to kilobytes."""
    text = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else str(path)
    if len(text) <= SHOWN:
        return repr(text)
    return f"'{text[:50]}...{text[-30:]}' ({len(text)} characters)"


class _Commands(TyperGroup):
    """The root group: a GraduateError from any command becomes its message and exit 2
    here, inside the app, so that an in-process runner sees what a user sees. Its
    commands are built from COMMANDS when first asked for."""

    # Any: typer vendors click, and the vendored Context type is not public.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except GraduateError as error:
            print_error(str(error))
            raise typer.Exit(2) from None
        except OSError as error:
            # A name the file system cannot hold is bad input wherever a path is first
            # looked at (an option, a flow's name, a ledger's file), and that is many places.
            if error.errno != errno.ENAMETOOLONG:
                raise
            name = error.filename if error.filename is not None else error.filename2
            path = "a path" if name is None else f"the path {_shortened(name)}"
            print_error(f"{path} is too long for the file system (at most 255 bytes a name, "
                        "4096 the whole path); give a shorter one")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # typer would exit 130 without a word
            # The with-blocks it unwound have stopped every process the command started.
            err_console.print("interrupted; every process graduate started was stopped")
            raise typer.Exit(130) from None

    def list_commands(self, ctx: Any) -> list[str]:
        # A command already built is in self.commands too: listed once, in COMMANDS' order.
        return [*(name for name in super().list_commands(ctx) if name not in COMMANDS),
                *COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name]
        found = getattr(importlib.import_module(f"graduate.cli.{module}"), attribute)
        command = (typer.main.get_group(found) if isinstance(found, typer.Typer) else
                   typer.main.get_command_from_info(
                       CommandInfo(name=cmd_name, callback=found),
                       pretty_exceptions_short=app.pretty_exceptions_short,
                       rich_markup_mode=self.rich_markup_mode))
        command.name = cmd_name  # a group's Typer has none of its own
        self.add_command(command, cmd_name)
        return command


app = typer.Typer(
    cls=_Commands,
    name="graduate",
    help=(
        "Run one business flow on Celery and on Temporal, break it, and prove what happened "
        "to every side effect.\n\nExample: graduate run partner_approval --engine temporal "
        "--instances 3 --signal approval=approve"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    temporal_address: Annotated[str | None, typer.Option(
        help="External Temporal frontend host:port (env GRADUATE_TEMPORAL_ADDRESS). "
             "Default: a local dev server started by graduate.")] = None,
    temporal_namespace: Annotated[str | None, typer.Option(
        help="Temporal namespace (env GRADUATE_TEMPORAL_NAMESPACE; default: default).")] = None,
    temporal_tls_cert: Annotated[str | None, typer.Option(
        help="Client certificate file for mTLS (env GRADUATE_TEMPORAL_TLS_CERT).")] = None,
    temporal_tls_key: Annotated[str | None, typer.Option(
        help="Client key file for mTLS (env GRADUATE_TEMPORAL_TLS_KEY).")] = None,
    temporal_tls_ca: Annotated[str | None, typer.Option(
        help="Server CA certificate file (env GRADUATE_TEMPORAL_TLS_CA).")] = None,
    temporal_api_key: Annotated[str | None, typer.Option(
        help="API key, e.g. for Temporal Cloud (env GRADUATE_TEMPORAL_API_KEY).")] = None,
    broker_url: Annotated[str | None, typer.Option(
        help="External Celery broker, redis://... or amqp://... (env GRADUATE_BROKER_URL). "
             "Default: a local Redis started by graduate.")] = None,
    result_backend_url: Annotated[str | None, typer.Option(
        help="Celery result backend, redis://... (env GRADUATE_RESULT_BACKEND_URL). "
             "Default: the broker when it is Redis, else a local Redis.")] = None,
    ledger_url: Annotated[str | None, typer.Option(
        help="Ledger database: a SQLite file or postgresql://... (env GRADUATE_LEDGER_URL). "
             "Default: .graduate/ledger.sqlite3.")] = None,
    app_db_url: Annotated[str | None, typer.Option(
        help="The Celery state machine's own tables (env GRADUATE_APP_DB_URL). "
             "Default: .graduate/app.sqlite3.")] = None,
) -> None:
    """Options here choose the services; flags beat GRADUATE_* variables beat pyproject."""
    ctx.obj = {
        "temporal_address": temporal_address, "temporal_namespace": temporal_namespace,
        "temporal_tls_cert": temporal_tls_cert, "temporal_tls_key": temporal_tls_key,
        "temporal_tls_ca": temporal_tls_ca, "temporal_api_key": temporal_api_key,
        "broker_url": broker_url, "result_backend_url": result_backend_url,
        "ledger_url": ledger_url, "app_db_url": app_db_url,
    }


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that every cleanup runs."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def entry() -> None:
    """The `graduate` command (and `python -m graduate`): `main()`, then out of the
    process without finalising the interpreter once the Temporal SDK is loaded: its core's
    threads can abort finalisation (see `processes.leave`). Only the process's own entry
    point leaves so: `main()` called inside another program (a test) returns by SystemExit
    as click does."""
    try:
        main()
    except SystemExit as leaving:  # how click ends every command, success included
        if "temporalio" in sys.modules:
            code = leaving.code
            if code is not None and not isinstance(code, int):
                print_error(str(code))
            leave(code if isinstance(code, int) else 0 if code is None else 1)
        raise


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except GraduateError as error:
        # Raised while the commands are built, before `_Commands.invoke`: the help texts
        # list the engines, and an installed engine package may fail to load.
        print_error(str(error))
        sys.exit(2)
    except Terminated:
        err_console.print("terminated; every process graduate started was stopped")
        sys.exit(143)
