"""Operator SQL on the queue index: read messages with their recipients, and the changes an operator makes
(retry, hold, release, delete) in short batches, so a running server's commits never wait long for the lock.

The server's own SQL (insert, claim, record) is in index.py and is not changed here; this module only reads
the same tables and makes changes those queries already allow for (an outcome for a deleted recipient is
ignored, a held message is never claimed). No files here: spool files are admin.py's.
"""

# S608 (SQL built from strings): the SQL here is composed only of this module's constant clauses and "?"
# placeholders; every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from postroom.queue.index import transaction

__all__ = [
    "AdminIndex",
    "Batch",
    "MessageView",
    "RecipientState",
    "RecipientView",
    "Selection",
    "StateFilter",
]

RecipientState = Literal["queued", "deferred", "delivered", "failed"]
StateFilter = Literal["queued", "deferred", "held", "failed"]

# A recipient claimed by a delivery whose outcome is not recorded yet (on any attempt): the claim marker
# holds the end of its lease until the outcome is recorded or the claim given back. Retrying it would hand
# it to a second delivery while the first is still running. A lease that ended (its worker died) is free.
# One parameter: now.
_CLAIMED = "(r.claimed_until IS NOT NULL AND r.claimed_until > ?)"
_QUEUED = "r.state = 'queued' AND r.last_error IS NULL"
_DEFERRED = "r.state = 'queued' AND r.last_error IS NOT NULL"
_RECIPIENT_CLAUSE = "(r.address = ? COLLATE NOCASE OR r.mailbox = ? COLLATE NOCASE)"
_DOMAIN_CLAUSE = "r.address LIKE ? ESCAPE '\\'"


def _exists(condition: str) -> str:
    """The message ``m`` has a recipient ``r`` meeting ``condition`` (one of the fixed clauses here)."""
    return f"EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND {condition})"


_STATE_CLAUSES: dict[str, str] = {
    "held": "m.status = 'held'",
    "queued": "m.status = 'active' AND " + _exists(_QUEUED),
    "deferred": "m.status = 'active' AND " + _exists(_DEFERRED),
    "failed": _exists("r.state = 'failed'"),
}


@dataclass(frozen=True, slots=True)
class RecipientView:
    """One recipient as an operator sees it. ``deferred``: queued, and an earlier attempt failed."""

    address: str
    mailbox: str
    state: RecipientState
    attempts: int
    next_attempt_at: float | None  # None once delivered or failed
    last_error: str | None
    claimed_until: float | None = None  # a delivery holds it until then (its outcome is not recorded yet)

    def in_delivery(self, now: float) -> bool:
        """A delivery attempt is under way right now (claimed, lease not over, outcome not recorded)."""
        return self.state in ("queued", "deferred") and (self.claimed_until or 0.0) > now


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageView:
    """One queued message: its envelope, whether it is held, and every recipient still on record."""

    queue_id: str
    sender: str
    size: int
    received_at: float
    client_ip: str
    helo: str
    held: bool
    spooled: bool  # the body is in spool/<queue_id>; otherwise inline in the index
    recipients: tuple[RecipientView, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which messages an operator means: every field given narrows the choice; nothing given means all.

    ``sender`` "" is the null sender; ``recipient`` matches the address as given or its mailbox;
    ``domain`` the domain of a recipient address. All are case-insensitive and exact.
    """

    queue_ids: tuple[str, ...] | None = None
    sender: str | None = None
    recipient: str | None = None
    domain: str | None = None
    state: StateFilter | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """What one short transaction changed, and where the next one starts (a rowid cursor)."""

    changed: list[tuple[str, bool]]  # (queue id, has a spool file): deleted or changed messages
    count: int  # rows changed: messages, or recipients for a retry
    last_rowid: int | None  # None: nothing left


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _message_where(selection: Selection) -> tuple[str, list[object]]:
    """The WHERE clause (on ``messages m``) for a selection, with its parameters."""
    clauses = ["1"]
    params: list[object] = []
    if selection.queue_ids is not None:
        clauses.append(f"m.id IN ({', '.join('?' * len(selection.queue_ids))})")
        params.extend(selection.queue_ids)
    if selection.sender is not None:
        clauses.append("m.sender = ? COLLATE NOCASE")
        params.append(selection.sender)
    if selection.recipient is not None:
        clauses.append(_exists(_RECIPIENT_CLAUSE))
        params.extend([selection.recipient, selection.recipient])
    if selection.domain is not None:
        clauses.append(_exists(_DOMAIN_CLAUSE))
        params.append("%@" + _like_escape(selection.domain))
    if selection.state is not None:
        clauses.append(_STATE_CLAUSES[selection.state])
    return " AND ".join(clauses), params


def _recipient_state(state: str, last_error: str | None) -> RecipientState:
    if state == "delivered":
        return "delivered"
    if state == "failed":
        return "failed"
    return "deferred" if last_error is not None else "queued"


class AdminIndex:
    """Operator reads and changes on one database connection (its own, not the server's)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def existing(self, queue_ids: Sequence[str]) -> set[str]:
        if not queue_ids:
            return set()
        marks = ", ".join("?" * len(queue_ids))
        rows = self._conn.execute(f"SELECT id FROM messages WHERE id IN ({marks})", tuple(queue_ids))
        return {row[0] for row in rows}

    def summary(self) -> tuple[int, float | None]:
        """Messages in the queue and the oldest one's received_at (None when empty): for metrics."""
        row = self._conn.execute("SELECT count(*), min(received_at) FROM messages").fetchone()
        return int(row[0]), None if row[1] is None else float(row[1])

    def body(self, queue_id: str) -> bytes | None:
        """The inline body of a small message; None when it has none (spooled, or gone)."""
        row = self._conn.execute("SELECT data FROM bodies WHERE message_id = ?", (queue_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def messages(self, selection: Selection) -> Generator[MessageView, None, None]:
        """Matching messages, oldest first, streamed: one read snapshot until the generator is done or closed
        (it does not block the server's writes), one message in memory at a time."""
        where, params = _message_where(selection)
        rows = self._conn.execute(
            "SELECT m.id, m.sender, m.size, m.received_at, coalesce(m.client_ip, ''), coalesce(m.helo, ''),"
            " m.status, m.spooled, r.address, r.mailbox, r.state, r.attempts, r.next_attempt_at,"
            " r.last_error, r.claimed_until"
            " FROM messages m JOIN recipients r ON r.message_id = m.id"
            f" WHERE {where} ORDER BY m.received_at, m.id, r.idx",
            params,
        )
        current: list[Any] = []
        for row in rows:
            if current and current[0][0] != row[0]:
                yield _view(current)
                current = []
            current.append(row)
        if current:
            yield _view(current)

    def max_rowids(self) -> tuple[int, int]:
        """The highest rowid of messages and of recipients now: a bulk change stops there."""
        row = self._conn.execute(
            "SELECT coalesce((SELECT max(rowid) FROM messages), 0),"
            " coalesce((SELECT max(rowid) FROM recipients), 0)"
        ).fetchone()
        return int(row[0]), int(row[1])

    def delete(self, selection: Selection, *, after: int, upto: int, limit: int) -> Batch:
        """Deletes up to ``limit`` matching messages (recipients and inline bodies go with them)."""
        where, params = _message_where(selection)
        with transaction(self._conn) as conn:
            rows = conn.execute(
                "DELETE FROM messages WHERE rowid IN (SELECT m.rowid FROM messages m"
                f" WHERE m.rowid > ? AND m.rowid <= ? AND {where} ORDER BY m.rowid LIMIT ?)"
                " RETURNING rowid, id, spooled",
                (after, upto, *params, limit),
            ).fetchall()
        return _batch(rows)

    def set_status(
        self, selection: Selection, status: Literal["active", "held"], *, after: int, upto: int, limit: int
    ) -> Batch:
        """Holds or releases up to ``limit`` matching messages; those already so are not counted."""
        where, params = _message_where(selection)
        with transaction(self._conn) as conn:
            rows = conn.execute(
                "UPDATE messages SET status = ? WHERE rowid IN (SELECT m.rowid FROM messages m"
                " WHERE m.rowid > ? AND m.rowid <= ? AND m.status != ?"
                f" AND {where} ORDER BY m.rowid LIMIT ?)"
                " RETURNING rowid, id, spooled",
                (status, after, upto, status, *params, limit),
            ).fetchall()
        return _batch(rows)

    def retry(self, selection: Selection, *, now: float, after: int, upto: int, limit: int) -> Batch:
        """Makes matching queued recipients of active messages due at ``now`` (never later than they were).

        ``recipient`` and ``domain`` narrow the recipients too, not only the messages. Recipients whose
        delivery is under way (claimed, outcome not recorded) are left to it.
        """
        where, params = _message_where(selection)
        rcpt_where = f"r.state = 'queued' AND NOT {_CLAIMED}"
        rcpt_params: list[object] = [now]
        if selection.recipient is not None:
            rcpt_where += f" AND {_RECIPIENT_CLAUSE}"
            rcpt_params.extend([selection.recipient, selection.recipient])
        if selection.domain is not None:
            rcpt_where += f" AND {_DOMAIN_CLAUSE}"
            rcpt_params.append("%@" + _like_escape(selection.domain))
        active = f"SELECT m.id FROM messages m WHERE m.status = 'active' AND {where}"
        scan_where = f"{rcpt_where} AND r.message_id IN ({active})"
        scan_params = [*rcpt_params, *params]
        with transaction(self._conn) as conn:
            rows = conn.execute(
                "UPDATE recipients SET next_attempt_at = min(next_attempt_at, ?) WHERE rowid IN"
                " (SELECT r.rowid FROM recipients r"
                f" WHERE r.rowid > ? AND r.rowid <= ? AND {scan_where} ORDER BY r.rowid LIMIT ?)"
                " RETURNING rowid, message_id, 0",
                (now, after, upto, *scan_params, limit),
            ).fetchall()
        return _batch(rows, distinct=True)

    def claim_pending(self, queue_id: str, *, now: float, lease_until: float) -> tuple[list[int], int]:
        """Claims the queued recipients of one message that no delivery holds, as the scheduler's claim
        does (held messages too): the server leaves them alone until ``lease_until``. Returns their idx and
        how many recipients a delivery holds (left to it)."""
        pending = "r.message_id = ? AND r.state = 'queued'"
        with transaction(self._conn) as conn:
            busy = conn.execute(
                f"SELECT count(*) FROM recipients r WHERE {pending} AND {_CLAIMED}", (queue_id, now)
            ).fetchone()
            rows = conn.execute(
                "UPDATE recipients SET next_attempt_at = ?, claimed_until = ? WHERE rowid IN"
                f" (SELECT r.rowid FROM recipients r WHERE {pending} AND NOT {_CLAIMED}) RETURNING idx",
                (lease_until, lease_until, queue_id, now),
            ).fetchall()
        return sorted(int(row[0]) for row in rows), int(busy[0])


def _batch(rows: Sequence[Any], *, distinct: bool = False) -> Batch:
    """``rows``: (rowid, queue id, spooled) as RETURNING gives them, in no particular order."""
    changed = [(str(row[1]), bool(row[2])) for row in rows]
    if distinct:
        changed = list(dict.fromkeys(changed))
    return Batch(changed, len(rows), max((int(row[0]) for row in rows), default=None))


def _view(rows: Sequence[Any]) -> MessageView:
    """One message from its joined rows (see ``AdminIndex.messages`` for the columns)."""
    first = rows[0]
    recipients = tuple(
        RecipientView(
            address=str(row[8]),
            mailbox=str(row[9]),
            state=_recipient_state(str(row[10]), row[13]),
            attempts=int(row[11]),
            next_attempt_at=float(row[12]) if row[10] == "queued" else None,
            last_error=row[13],
            claimed_until=None if row[14] is None or row[10] != "queued" else float(row[14]),
        )
        for row in rows
    )
    return MessageView(
        queue_id=str(first[0]),
        sender=str(first[1]),
        size=int(first[2]),
        received_at=float(first[3]),
        client_ip=str(first[4]),
        helo=str(first[5]),
        held=first[6] == "held",
        spooled=bool(first[7]),
        recipients=recipients,
    )
