"""Opens SQLite the way postroom needs it (WAL, durable commits, waits on locks) and applies migrations.

It does not know any table: the schema lives in ``migrations.py`` and the queries in the rooms that own them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from postroom.store.migrations import MIGRATIONS

__all__ = ["SchemaTooNewError", "begin_immediate", "open_database"]

_BUSY_TIMEOUT_MS = 10_000
_FIRST_PAUSE = 0.0001  # seconds between tries for the write lock: from 0.1 ms, doubling, at most 2 ms
_LONGEST_PAUSE = 0.002


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


def begin_immediate(conn: sqlite3.Connection, *, wait: float = _BUSY_TIMEOUT_MS / 1000) -> None:
    """``BEGIN IMMEDIATE``: takes the write lock, trying again every 0.1 to 2 ms while another writer has it.

    SQLite's own busy handler (busy_timeout) sleeps 1, 2, 5, 10, 15... ms between tries. Our writers hold
    the lock for a fraction of a millisecond, so under load those sleeps were most of a commit's time: an
    index insert of 0.6 ms (median) took 4.5 ms at the 90th percentile and 19 ms at the 99th. Here the lock
    is tried in short steps for ``wait`` seconds (as long as busy_timeout would have waited); then the last
    error is raised.
    Blocks its thread: call it where blocking is allowed (worker threads, the commit process, the CLI).
    """
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + wait
        pause = _FIRST_PAUSE
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            else:
                return
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")


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
