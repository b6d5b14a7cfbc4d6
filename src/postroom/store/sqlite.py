"""Opens SQLite the way postroom needs it (WAL, durable commits, waits on locks) and applies migrations.

It does not know any table: the schema lives in ``migrations.py`` and the queries in the rooms that own them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from postroom.store.migrations import MIGRATIONS

__all__ = ["SchemaTooNewError", "open_database"]

_BUSY_TIMEOUT_MS = 10_000


class SchemaTooNewError(sqlite3.DatabaseError):
    """The database was written by a newer postroom; refusing to guess what its schema means."""


def open_database(path: Path, *, readonly: bool = False, durable: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (callers write ``BEGIN IMMEDIATE`` ... ``COMMIT`` themselves).

    Writers get WAL, ``synchronous=FULL`` (a returned COMMIT is on disk) and the schema migrated to the
    latest version. ``check_same_thread`` is off: a connection may be handed to the one worker thread that
    owns it, or shared behind a lock; never use it from two threads at once.

    ``durable=False`` (``synchronous=NORMAL``) is for writes that may be lost in a power cut without harm:
    a lost delivery record means one more delivery, never a lost message. The database stays consistent.
    """
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Runs every migration the database has not seen, all in one transaction; returns the version."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait here, then see the new version
    try:
        version = _known_version(conn)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def _known_version(conn: sqlite3.Connection) -> int:
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this postroom knows ({len(MIGRATIONS)})"
        )
    return version


def _statements(script: str) -> list[str]:
    """Splits a migration script into statements (executescript would commit our transaction)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()[:60]}")
    return statements
