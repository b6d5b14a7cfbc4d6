"""The report outbox in SQL: every DSN's worth of data, kept from the outcome that called for it until the
DSN message that carries it is queued.

Theory of operation (RFC 5321 6.1: once we accepted a message we deliver it or report the failure):
``Index.record`` stores each report (a FailedMessage: sender, the reported recipients, RET/ENVID, the
original header section and, for RET=FULL, the message) in the same transaction as the outcomes, so a
crash can no longer fall between "recipient failed" and "sender told". The row is self-contained: the
message's own rows and spool file may leave the queue in that very transaction. A row carries a lease
(``next_attempt_at``): the process that recorded it bounces it at once; any process may take it after the
lease (a bounce that failed, a process that died), and a process that starts alone on the queue takes
all of them at once. ``Index.insert`` deletes the row in the transaction that commits the DSN message
(``NewMessage.report_id``), so a report is queued once. No DSN text here (delivery/dsn.py) and no files:
``gather`` is given a function that reads spool files.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from postroom.queue.model import FailedMessage, FailedRecipient
from postroom.queue.notify import DsnEnvelope

if TYPE_CHECKING:  # index.py imports this module
    from postroom.queue.index import Recorded

__all__ = ["SpooledReader", "claim", "count", "delete", "gather", "release_all", "store"]

# (queue id, whether the whole message is wanted) -> (header section, whole message or None); b"", None
# when the file cannot be read.
SpooledReader = Callable[[str, bool], tuple[bytes, bytes | None]]

_FIELDS = frozenset(field.name for field in dataclasses.fields(FailedRecipient))


def gather(
    recorded: Sequence[Recorded],
    *,
    inline_headers: Mapping[str, bytes],
    envelopes: Mapping[str, DsnEnvelope],
    read_spooled: SpooledReader,
) -> list[FailedMessage]:
    """The recorded outcomes with a report, one FailedMessage per message; never for the null sender
    (RFC 5321 4.5.5: no bounce for a bounce). ``inline_headers`` holds the header section of each reported
    message whose body is in the index; the others are read with ``read_spooled``."""
    grouped: dict[str, list[Recorded]] = {}
    for item in recorded:
        if item.failure is not None and item.sender:
            grouped.setdefault(item.queue_id, []).append(item)
    reports = []
    for queue_id, items in grouped.items():
        recipients = tuple(item.failure for item in items if item.failure is not None)
        envelope = envelopes.get(queue_id, DsnEnvelope("", ""))
        failed = any(recipient.action == "failed" for recipient in recipients)
        original = envelope.original
        headers = inline_headers.get(queue_id)
        if headers is None:  # a spooled message: its file is still there (unlinked after the commit)
            headers, spooled = read_spooled(queue_id, envelope.ret == "FULL" and failed and original is None)
            original = original if original is not None else spooled
        reports.append(
            FailedMessage(
                queue_id=queue_id,
                sender=items[0].sender,
                received_at=items[0].received_at,
                recipients=recipients,
                headers=headers,
                ret=envelope.ret,
                envid=envelope.envid,
                original=original if failed else None,  # RFC 3461 4.3: RET=FULL returns it with a failure
            )
        )
    return reports


def store(
    conn: sqlite3.Connection, reports: Sequence[FailedMessage], *, now: float, lease_until: float
) -> list[FailedMessage]:
    """Inserts the reports (inside the caller's transaction); returns them with their ``report_id``."""
    stored = []
    for report in reports:
        row = conn.execute(
            "INSERT INTO reports (queue_id, sender, received_at, ret, envid, recipients, headers, original,"
            " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                report.queue_id,
                report.sender,
                report.received_at,
                report.ret,
                report.envid,
                json.dumps([dataclasses.asdict(recipient) for recipient in report.recipients]),
                report.headers,
                report.original,
                now,
                lease_until,
            ),
        ).fetchone()
        stored.append(dataclasses.replace(report, report_id=int(row[0])))
    return stored


def claim(conn: sqlite3.Connection, *, now: float, lease_until: float, limit: int) -> list[FailedMessage]:
    """Reports whose lease ended, oldest first; their lease moves to ``lease_until`` (one transaction,
    the caller's). A read first, so that the usual empty outbox costs no write."""
    rows = conn.execute(
        "SELECT id, queue_id, sender, received_at, ret, envid, recipients, headers, original FROM reports"
        " WHERE next_attempt_at <= ? ORDER BY id LIMIT ?",
        (now, limit),
    ).fetchall()
    if rows:
        conn.executemany(
            "UPDATE reports SET next_attempt_at = ? WHERE id = ?", [(lease_until, row[0]) for row in rows]
        )
    return [_report(row) for row in rows]


def release_all(conn: sqlite3.Connection, *, now: float) -> int:
    """Ends every lease (a process that starts alone on the queue: whoever held them is gone)."""
    cursor = conn.execute("UPDATE reports SET next_attempt_at = ? WHERE next_attempt_at > ?", (now, now))
    return cursor.rowcount


def delete(conn: sqlite3.Connection, report_ids: Collection[int]) -> None:
    """Removes reports whose DSN is being committed in the caller's transaction."""
    conn.executemany("DELETE FROM reports WHERE id = ?", [(report_id,) for report_id in report_ids])


def count(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM reports").fetchone()
    return int(row[0])


def _report(row: Sequence[Any]) -> FailedMessage:
    recipients = tuple(
        FailedRecipient(**{key: value for key, value in item.items() if key in _FIELDS})
        for item in json.loads(row[6])
    )
    return FailedMessage(
        queue_id=str(row[1]),
        sender=str(row[2]),
        received_at=float(row[3]),
        recipients=recipients,
        headers=bytes(row[7]),
        ret=str(row[4]),
        envid=str(row[5]),
        original=None if row[8] is None else bytes(row[8]),
        report_id=int(row[0]),
    )
