"""The message for a name too long for the file system (review L6): an OSError raised
without a filename (a library's, or a C extension's) says "a path", not "the path None";
one with only its second filename (a rename's target) names that one."""

from __future__ import annotations

import errno
import os

import pytest
import typer
from typer.testing import CliRunner

from graduate.cli.app import _Commands

LONG = "z" * 3000


def second_only(name: str) -> OSError:
    """An error whose second filename alone is set (the constructor sets it only with the
    first)."""
    error = OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    error.filename2 = name
    return error


def refused(error: OSError) -> str:
    probe = typer.Typer(cls=_Commands)

    @probe.callback()
    def root() -> None:
        pass

    @probe.command()
    def fail() -> None:
        raise error

    result = CliRunner().invoke(probe, ["fail"])
    assert result.exit_code == 2, result.output
    return result.output


@pytest.mark.parametrize(("error", "named"), [
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)), "error: a path is too long"),
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "short.txt"),
     "error: the path 'short.txt' is too long"),
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "from.txt", None, LONG),
     "error: the path 'from.txt' is too long"),
    (second_only(LONG), f"error: the path '{'z' * 50}...{'z' * 30}' (3000 characters) is "
                        "too long"),
], ids=["no-filename", "filename", "both", "filename2-only"])
def test_a_name_too_long_is_named_shortened_or_said_to_be_a_path(error: OSError,
                                                                   named: str) -> None:
    output = refused(error)
    assert named in output
    assert "None" not in output
    assert LONG not in output
    assert "give a shorter one" in output
