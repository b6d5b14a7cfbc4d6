"""open_database: durability pragmas, migrations, read-only mode; begin_immediate."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from postroom.store import open_database
from postroom.store.migrations import MIGRATIONS
from postroom.store.sqlite import SchemaTooNewError, begin_immediate


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_open_database_sets_wal_full_sync_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "sub" / "db.sqlite")
    try:
        assert _pragma(conn, "journal_mode") == "wal"
        assert _pragma(conn, "synchronous") == 2  # FULL
        assert _pragma(conn, "busy_timeout") == 10_000
        assert _pragma(conn, "foreign_keys") == 1
        assert _pragma(conn, "user_version") == len(MIGRATIONS)
    finally:
        conn.close()


def test_schema_v1_has_the_tables_and_due_index(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "db.sqlite")
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert {"mailboxes", "aliases", "messages", "recipients", "recipients_due"} <= names


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = open_database(path)
    conn.execute("INSERT INTO mailboxes (address, created_at) VALUES ('A@Example.Test', 1.0)")
    conn.close()
    conn = open_database(path)
    try:
        row = conn.execute("SELECT address FROM mailboxes WHERE address = 'a@example.test'").fetchone()
    finally:
        conn.close()
    assert row == ("A@Example.Test",)  # COLLATE NOCASE


def test_deleting_a_message_cascades_to_its_recipients(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "db.sqlite")
    try:
        conn.execute("INSERT INTO messages (id, sender, size, received_at) VALUES ('m', '', 1, 0)")
        conn.execute(
            "INSERT INTO recipients (message_id, idx, address, mailbox, next_attempt_at)"
            " VALUES ('m', 0, 'a@x', 'a@x', 0)"
        )
        conn.execute("DELETE FROM messages")
        assert conn.execute("SELECT count(*) FROM recipients").fetchone()[0] == 0
    finally:
        conn.close()


def test_readonly_reads_but_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    open_database(path).close()
    conn = open_database(path, readonly=True)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("INSERT INTO mailboxes (address, created_at) VALUES ('a@x', 1.0)")
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = open_database(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError):
        open_database(path)


# --- begin_immediate: the write lock, tried in short steps --------------------------------------------


def test_begin_immediate_waits_for_another_writer_and_restores_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder, waiter = open_database(path), open_database(path)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.05, lambda: holder.execute("COMMIT"))  # another thread lets go soon
    release.start()
    try:
        begin_immediate(waiter)  # waits for the holder, then has the lock
        assert waiter.in_transaction
        waiter.execute("COMMIT")
        assert _pragma(waiter, "busy_timeout") == 10_000
    finally:
        release.join()
        holder.close()
        waiter.close()


def test_begin_immediate_gives_up_after_its_wait(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder, waiter = open_database(path), open_database(path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(waiter, wait=0.05)
        assert not waiter.in_transaction
        assert _pragma(waiter, "busy_timeout") == 10_000
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        waiter.close()
