"""The queue index in SQL: one row per message, one per recipient; insert, claim, record, count.

Every method is one transaction on the connection it was given. Not thread-safe by itself: the caller owns
the connection (the commit worker) or holds a lock (delivery threads). No files here (see spool.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from postroom.config.schema import QueueSettings
from postroom.queue import outbox
from postroom.queue.model import DueRecipient, Envelope, FailedMessage, FailedRecipient, Outcome, Recipient
from postroom.queue.notify import annotate
from postroom.queue.schedule import next_attempt_at
from postroom.store.sqlite import begin_immediate

__all__ = ["HEADERS_MAX", "Index", "NewMessage", "Recorded", "header_section"]

HEADERS_MAX = 64 * 1024  # the original headers a DSN carries, at most (RFC 3462 text/rfc822-headers)
_EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


def header_section(data: bytes) -> bytes:
    """The header section of a message (up to and with the blank line), at most HEADERS_MAX octets."""
    data = data[:HEADERS_MAX]
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[: end + 4]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message whose spool file is durable, ready for its index rows."""

    queue_id: str
    envelope: Envelope
    size: int
    received_at: float
    body: bytes | None = None  # inline body (small messages); None: the body is in spool/<queue_id>
    report_id: int | None = None  # a DSN: its report outbox row, deleted in the same transaction


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded outcome as it ended up: delivered, deferred (with the next attempt) or failed."""

    queue_id: str
    address: str
    state: Literal["delivered", "deferred", "failed"]
    attempts: int
    detail: str
    next_attempt_at: float | None = None
    failure: FailedRecipient | None = None  # set when state is "failed": what the DSN says
    sender: str = ""
    received_at: float = 0.0
    transport: str = "local"  # where the recipient was going ("local" or "smtp"): logs and metrics


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock, taken now: see begin_immediate) ... COMMIT, or ROLLBACK."""
    begin_immediate(conn)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Index:
    """The messages and recipients tables of one database connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def known_ids(self) -> set[str]:
        return {row[0] for row in self._conn.execute("SELECT id FROM messages")}

    def spooled_ids(self) -> set[str]:
        """The messages whose body is in a spool file (not inline)."""
        return {row[0] for row in self._conn.execute("SELECT id FROM messages WHERE spooled")}

    def any_spooled(self, queue_ids: Sequence[str]) -> bool:
        """True when one of these messages has its body in a spool file."""
        ids = list(dict.fromkeys(queue_ids))
        for start in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT 1 FROM messages WHERE spooled AND id IN ({marks}) LIMIT 1"  # noqa: S608 - only ?s
            if self._conn.execute(query, chunk).fetchone() is not None:
                return True
        return False

    def count_active(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM messages WHERE status = 'active'").fetchone()
        return int(row[0])

    def insert(self, messages: Sequence[NewMessage]) -> None:
        """All rows of all messages in one transaction: one WAL fsync for the whole batch."""
        message_rows = [
            (
                m.queue_id,
                m.envelope.sender,
                m.size,
                m.received_at,
                m.envelope.client_ip,
                m.envelope.helo,
                int(m.body is None),
                m.envelope.ret,
                m.envelope.envid,
            )
            for m in messages
        ]
        body_rows = [(m.queue_id, m.body) for m in messages if m.body is not None]
        recipient_rows = [
            (m.queue_id, idx, rcpt.address, rcpt.mailbox, m.received_at, rcpt.transport, *_dsn(rcpt))
            for m in messages
            for idx, rcpt in enumerate(m.envelope.recipients)
        ]
        with transaction(self._conn) as conn:
            conn.executemany(
                "INSERT INTO messages (id, sender, size, received_at, client_ip, helo, spooled, dsn_ret,"
                " dsn_envid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                message_rows,
            )
            conn.executemany("INSERT INTO bodies (message_id, data) VALUES (?, ?)", body_rows)
            conn.executemany(
                "INSERT INTO recipients (message_id, idx, address, mailbox, next_attempt_at, transport,"
                " notify, orcpt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                recipient_rows,
            )
            # A DSN and the outbox row it reports go together: a report is queued once (outbox.py).
            outbox.delete(conn, [m.report_id for m in messages if m.report_id is not None])

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[DueRecipient]:
        """Due recipients, oldest first; their next attempt moves to ``lease_until`` before returning."""
        with transaction(self._conn) as conn:
            rows = conn.execute(
                "SELECT r.message_id, r.idx, r.address, r.mailbox, m.sender, r.attempts + 1, m.received_at,"
                " b.data, r.transport, r.notify, r.orcpt, m.dsn_ret, m.dsn_envid"
                " FROM recipients r JOIN messages m ON m.id = r.message_id"
                " LEFT JOIN bodies b ON b.message_id = r.message_id"
                " WHERE r.state = 'queued' AND r.next_attempt_at <= ? AND m.status = 'active'"
                " ORDER BY r.next_attempt_at LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE recipients SET attempts = attempts + 1, next_attempt_at = ?, claimed_until = ?"
                " WHERE message_id = ? AND idx = ?",
                [(lease_until, lease_until, row[0], row[1]) for row in rows],
            )
        return [DueRecipient(*row) for row in rows]

    def release(self, recipients: Sequence[DueRecipient], *, now: float) -> None:
        """Gives claimed but unattempted recipients back: due now, the claim's attempt not counted."""
        with transaction(self._conn) as conn:
            conn.executemany(
                "UPDATE recipients SET attempts = max(attempts - 1, 0), next_attempt_at = ?,"
                " claimed_until = NULL WHERE message_id = ? AND idx = ? AND state = 'queued'",
                [(now, r.queue_id, r.idx) for r in recipients],
            )

    def record(
        self,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        settings: QueueSettings,
        read_spooled: outbox.SpooledReader,
        random: Callable[[], float] | None = None,
    ) -> tuple[list[Recorded], list[tuple[str, bool]], list[FailedMessage]]:
        """Applies outcomes in one transaction; deletes messages left with no queued recipient.

        Returns what each outcome became, the deleted messages as (queue id, has a spool file): the files
        are the caller's to unlink, after this commit; and the reports (DSNs to queue) stored in the outbox
        in this same transaction. Outcomes for recipients no longer queued are ignored. ``read_spooled``
        reads a reported spooled message's headers (and RET=FULL original) before its file goes.
        """
        pairs: list[tuple[Outcome, Recorded]] = []
        touched: dict[str, None] = {}
        with transaction(self._conn) as conn:
            for outcome in outcomes:
                done = self._record_one(conn, outcome, now=now, settings=settings, random=random)
                if done is not None:
                    pairs.append((outcome, done))
                    touched[outcome.queue_id] = None
            # NOTIFY (RFC 3461): which of them the sender hears about; success notices, delay warnings
            recorded, envelopes = annotate(conn, pairs, now=now, settings=settings)
            inline_headers = {}
            for queue_id in {item.queue_id for item in recorded if item.failure is not None and item.sender}:
                row = conn.execute("SELECT data FROM bodies WHERE message_id = ?", (queue_id,)).fetchone()
                if row is not None:
                    inline_headers[queue_id] = header_section(bytes(row[0]))
            reports = outbox.gather(
                recorded, inline_headers=inline_headers, envelopes=envelopes, read_spooled=read_spooled
            )
            reports = outbox.store(conn, reports, now=now, lease_until=now + settings.claim_lease)
            removed = [gone for queue_id in touched if (gone := self._remove_if_done(conn, queue_id))]
        return recorded, removed, reports

    def claim_reports(self, *, now: float, lease_until: float, limit: int) -> list[FailedMessage]:
        """Reports in the outbox whose lease ended; each one's lease moves to ``lease_until``."""
        with transaction(self._conn) as conn:
            return outbox.claim(conn, now=now, lease_until=lease_until, limit=limit)

    def release_reports(self, *, now: float) -> int:
        """Every report in the outbox is due now (at start, when no other process runs on the queue)."""
        with transaction(self._conn) as conn:
            return outbox.release_all(conn, now=now)

    def count_reports(self) -> int:
        return outbox.count(self._conn)

    def _record_one(
        self,
        conn: sqlite3.Connection,
        outcome: Outcome,
        *,
        now: float,
        settings: QueueSettings,
        random: Callable[[], float] | None,
    ) -> Recorded | None:
        key = (outcome.queue_id, outcome.idx)
        row = conn.execute(
            "SELECT r.address, r.attempts, m.received_at, m.sender, r.transport"
            " FROM recipients r JOIN messages m ON m.id = r.message_id"
            " WHERE r.message_id = ? AND r.idx = ? AND r.state = 'queued'",
            key,
        ).fetchone()
        if row is None:
            return None
        address, attempts, received_at, sender = row[0], int(row[1]), float(row[2]), str(row[3])
        transport = str(row[4])
        if outcome.result == "delivered":
            conn.execute(
                "UPDATE recipients SET state = 'delivered', last_error = NULL, claimed_until = NULL"
                " WHERE message_id = ? AND idx = ?",
                key,
            )
            return Recorded(
                outcome.queue_id, address, "delivered", attempts, outcome.detail,
                received_at=received_at, transport=transport,
            )
        detail = outcome.detail
        retry_at = None
        expired = False
        if outcome.result == "temporary":
            retry_at = next_attempt_at(
                attempts=attempts, now=now, received_at=received_at, settings=settings, random=random
            )
            if retry_at is None:
                expired = True
                detail = f"expired after {attempts} attempts: {detail}"
        if retry_at is None:
            conn.execute(
                "UPDATE recipients SET state = 'failed', last_error = ?, claimed_until = NULL"
                " WHERE message_id = ? AND idx = ?",
                (detail, *key),
            )
            failure = FailedRecipient(
                address=address,
                status=_failure_status(outcome, expired=expired),
                detail=detail,
                remote_mta=outcome.remote_mta,
                diagnostic=outcome.diagnostic,
                expired=expired,
            )
            return Recorded(
                outcome.queue_id, address, "failed", attempts, detail, None, failure, sender, received_at,
                transport=transport,
            )
        conn.execute(
            "UPDATE recipients SET next_attempt_at = ?, last_error = ?, claimed_until = NULL"
            " WHERE message_id = ? AND idx = ?",
            (retry_at, detail, *key),
        )
        return Recorded(
            outcome.queue_id, address, "deferred", attempts, detail, retry_at,
            received_at=received_at, transport=transport,
        )

    @staticmethod
    def _remove_if_done(conn: sqlite3.Connection, queue_id: str) -> tuple[str, bool] | None:
        """Deletes the message (its recipients and inline body go with it) when no recipient is queued;
        returns (queue id, whether it has a spool file to unlink)."""
        pending = conn.execute(
            "SELECT 1 FROM recipients WHERE message_id = ? AND state = 'queued' LIMIT 1", (queue_id,)
        ).fetchone()
        if pending is not None:
            return None
        row = conn.execute("DELETE FROM messages WHERE id = ? RETURNING spooled", (queue_id,)).fetchone()
        return None if row is None else (queue_id, bool(row[0]))


def _dsn(recipient: Recipient) -> tuple[str, str]:
    return recipient.notify, recipient.orcpt


def _failure_status(outcome: Outcome, *, expired: bool) -> str:
    """The DSN Status of a recipient given up on: the remote server's own code when it gave a permanent
    one, "4.4.7" (RFC 3463: delivery time expired) for expiry, else 5.0.0 (other undefined status)."""
    if expired:
        return outcome.status if outcome.status.startswith("4.") else _EXPIRED_STATUS
    return outcome.status if outcome.status.startswith("5.") else "5.0.0"
