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

# Claim marker: a recipient handed to a delivery carries the end of its lease until the outcome is recorded
# (or the claim is given back), so operator retries and flushes can see a delivery under way on any attempt.
_CLAIMS = """
ALTER TABLE recipients ADD COLUMN claimed_until REAL;
"""

# DSN (RFC 3461): RET and ENVID of each message, NOTIFY and ORCPT of each recipient, and whether a delay
# warning (RFC 3464 Action: delayed) was already sent for a recipient (once each).
_DSN = """
ALTER TABLE messages ADD COLUMN dsn_ret TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN dsn_envid TEXT NOT NULL DEFAULT '';
ALTER TABLE recipients ADD COLUMN notify TEXT NOT NULL DEFAULT '';
ALTER TABLE recipients ADD COLUMN orcpt TEXT NOT NULL DEFAULT '';
ALTER TABLE recipients ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
"""

# Rate limits and greylisting (policy/limitstore.py): counts per key and time slot (added to, so that
# several nodes can share them), and greylisting triplets. Written behind, every few seconds.
_RATES_AND_GREYLIST = """
CREATE TABLE rate_counts (
    key        TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    amount     REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (key, slot)
) WITHOUT ROWID;
CREATE INDEX rate_counts_expiry ON rate_counts (expires_at);
CREATE TABLE greylist (
    triplet    TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL,
    passed     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX greylist_last_seen ON greylist (last_seen);
"""

# SCRAM-SHA-256 (auth/scram.py): salt, iterations, StoredKey and ServerKey of the mailbox's password in
# RFC 5803's form, written with the argon2id hash. Mailboxes older than this have none until their
# password is set again.
_SCRAM = """
ALTER TABLE mailboxes ADD COLUMN scram_sha256 TEXT;
"""

# The report outbox (queue/outbox.py): what each DSN says (bounce, delay warning, success notice), written
# in the transaction that records its outcomes and deleted in the one that queues the DSN, so a crash
# between the two loses no report. Self-contained (no reference to messages: the message may be gone).
# ``recipients`` is a JSON array of the reported recipients; ``next_attempt_at`` a lease, as for claims.
_REPORT_OUTBOX = """
CREATE TABLE reports (
    id              INTEGER PRIMARY KEY,
    queue_id        TEXT NOT NULL,
    sender          TEXT NOT NULL,
    received_at     REAL NOT NULL,
    ret             TEXT NOT NULL DEFAULT '',
    envid           TEXT NOT NULL DEFAULT '',
    recipients      TEXT NOT NULL,
    headers         BLOB NOT NULL,
    original        BLOB,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL
);
CREATE INDEX reports_due ON reports (next_attempt_at);
"""

MIGRATIONS: tuple[str, ...] = (
    _V1, _V2, _V3, _V4, _CLAIMS, _DSN, _RATES_AND_GREYLIST, _SCRAM, _REPORT_OUTBOX,
)
