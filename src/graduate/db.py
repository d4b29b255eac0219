"""A small SQL layer over SQLite (the default) and PostgreSQL (when given a URL).

The ledger and the Celery state machine's own tables both use it. Every process and
every thread gets its own connection: workers are separate processes, and Temporal
runs synchronous activities in threads.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from graduate.errors import ConfigError, ServiceError
from graduate.redaction import redact_password, redact_text, redact_url

Row = tuple[Any, ...]
# The advisory lock that serialises the creation of tables on PostgreSQL (`script`).
SCHEMA_LOCK = 7_318_018


class _Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def close(self) -> None: ...


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


_PATH_HINT = ("the path of a database file in a folder you can write (--ledger-url, "
              "--app-db-url), or a postgresql:// URL")


def in_dialect(statement: str, *, postgres: bool) -> str:
    """`statement` of `Database.script` as PostgreSQL or SQLite reads it."""
    identity = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY"
    return statement.replace("{id}", identity).replace(
        "{without_rowid}", "" if postgres else " WITHOUT ROWID")


def _check_sqlite_path(path: Path) -> None:
    """Refuse a database path that cannot be a writable file, before any run starts."""
    if path.is_dir():
        raise ConfigError(f"database {path} is a directory, not a file; give {_PATH_HINT}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the folder of database {path} ({error.strerror}); "
                          f"give {_PATH_HINT}") from error
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(f"database {path} is read-only (no write permission on {target}); "
                          f"give {_PATH_HINT}")


class Database:
    """One database, by URL: `postgresql://...`, `sqlite:///path` or a plain file path.

    `fsync_each_commit=False` lets SQLite commit without an fsync (its WAL's
    `synchronous=NORMAL`): a commit still outlives the process that made it, killed or
    not, and only a machine that loses power may lose the last ones. PostgreSQL keeps
    its server's setting either way.
    """

    def __init__(self, url: str, *, fsync_each_commit: bool = True) -> None:
        self.url = url
        self.fsync_each_commit = fsync_each_commit
        self.postgres = is_postgres(url)
        if not self.postgres:
            path = url.removeprefix("sqlite:///")
            # Any other scheme (mysql://, postgresql+psycopg://) would become a local file.
            other_scheme = url.startswith("sqlite:") or "://" in url
            if not path or (other_scheme and not url.startswith("sqlite:///")):
                raise ConfigError(f"database URL {redact_password(url)!r} is not understood; "
                                  "use a file path, sqlite:///path/to/file.db or "
                                  "postgresql://user@host/db")
            self.path = Path(path)
            _check_sqlite_path(self.path)
        self._local = threading.local()

    @property
    def kind(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _connect(self) -> _Connection:
        if self.postgres:
            import psycopg

            try:
                return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as error:
                raise ServiceError(
                    f"cannot connect to PostgreSQL at {redact_password(self.url)}: "
                    f"{redact_text(str(error).strip())}. Check that the server runs and the URL, "
                    "user and database are right."
                ) from error
            except psycopg.ProgrammingError as error:
                # libpq could not parse the URL; its message quotes the URL, password too.
                raise ConfigError(
                    f"database URL {redact_url(self.url)!r} is not a valid PostgreSQL URL "
                    f"({redact_text(str(error).strip())}); write "
                    "postgresql://USER:PASSWORD@HOST:PORT/DB, with any special character "
                    "in the password percent-encoded"
                ) from None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=60,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"cannot use {self.path} as a SQLite database ({error}); give "
                              f"{_PATH_HINT}") from error
        conn.execute("PRAGMA busy_timeout=60000")
        if not self.fsync_each_commit:
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = self._connection().execute(self._sql(sql), tuple(params))
        return int(cursor.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._connection().execute(self._sql(sql), tuple(params))
        return [tuple(row) for row in cursor.fetchall()]

    def script(self, statements: Sequence[str]) -> None:
        """Create tables; `{id}` stands for each dialect's growing row key, and
        `{without_rowid}` for SQLite's WITHOUT ROWID (a table that is its primary key's
        b-tree; PostgreSQL's tables have no rowid)."""
        # SQLite's INTEGER PRIMARY KEY takes the highest rowid plus one: ids only grow
        # while no row is deleted, and graduate never deletes from these tables.
        # AUTOINCREMENT would add a write to sqlite_sequence to every insert.
        with self.transaction():
            if self.postgres:
                # PostgreSQL's CREATE ... IF NOT EXISTS is not safe against a concurrent
                # one (the loser fails on a unique index of the catalog): workers that
                # start together take turns. (SQLite's BEGIN IMMEDIATE serialises them.)
                self.query("SELECT pg_advisory_xact_lock(?)", [SCHEMA_LOCK])
            for statement in statements:
                self.execute(in_dialect(statement, postgres=self.postgres))

    def columns(self, table: str) -> set[str]:
        """The columns of `table`; none when there is no such table."""
        if self.postgres:
            return {row[0] for row in self.query(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ?", [table])}
        return {row[1] for row in self.query(f"PRAGMA table_info({table})")}

    def add_column(self, table: str, column: str, definition: str) -> None:
        """Add `column` to `table` unless it is there: a ledger written by an earlier
        version of graduate gains the columns a newer one records."""
        # Look first, on PostgreSQL too: ALTER TABLE locks the table even when the column
        # is there.
        if column in self.columns(table):
            return
        if_absent = "IF NOT EXISTS " if self.postgres else ""
        self.execute(f"ALTER TABLE {table} ADD COLUMN {if_absent}{column} {definition}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A serialised write transaction (BEGIN IMMEDIATE on SQLite)."""
        conn = self._connection()
        begun = False
        try:
            # Inside the try: a soft time limit that lands just after BEGIN must still
            # roll back, or the connection stays in a transaction for the next caller.
            conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
            begun = True
            yield
        except BaseException:
            if begun:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
