"""The schema as an ordered list of SQL scripts; script N brings the database to ``PRAGMA user_version`` N+1.

Append new scripts, never edit old ones: a database in the field has already run them. Applying them is
``sqlite.py``'s job, not this module's.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

_V1 = """
CREATE TABLE mailboxes (
    address       TEXT PRIMARY KEY COLLATE NOCASE,
    password_hash TEXT,
    created_at    REAL NOT NULL
);
CREATE TABLE aliases (
    address TEXT NOT NULL COLLATE NOCASE,
    target  TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (address, target)
);
CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    sender      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    received_at REAL NOT NULL,
    client_ip   TEXT,
    helo        TEXT,
    status      TEXT NOT NULL DEFAULT 'active'
);
CREATE TABLE recipients (
    message_id      TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx             INTEGER NOT NULL,
    address         TEXT NOT NULL,
    mailbox         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error      TEXT,
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX recipients_due ON recipients (state, next_attempt_at);
"""

# Small messages keep their body in the index (committed with their rows: one fsync for a whole batch);
# ``spooled`` says whether a message has a spool file to remove when it leaves the queue.
_V2 = """
ALTER TABLE messages ADD COLUMN spooled INTEGER NOT NULL DEFAULT 1;
CREATE TABLE bodies (
    message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    data       BLOB NOT NULL
) WITHOUT ROWID;
"""

# Remote delivery: each recipient says how it leaves ("local" Maildir or "smtp" to another domain's MX).
_V3 = """
ALTER TABLE recipients ADD COLUMN transport TEXT NOT NULL DEFAULT 'local';
"""

# Login throttling: failed AUTH attempts per client IP and per account survive a restart.
_V4 = """
CREATE TABLE auth_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failure REAL NOT NULL
) WITHOUT ROWID;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
