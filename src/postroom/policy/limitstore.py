"""The database side of rate limits and greylisting: load the live counts, write a batch in one transaction
(amounts are added, so nodes sharing a database sum up), look a greylisting triplet up, purge old rows.

Two connections: ``writer`` is used from one worker thread at a time (batches), ``reader`` from the event
loop (a primary-key read, which WAL never blocks). The tables are in store/migrations.py.
"""

from __future__ import annotations

import sqlite3
import threading

from postroom.policy.greylist import GreyEntry
from postroom.policy.ratelimit import SlotAmount, SlotTotal
from postroom.store.sqlite import begin_immediate

__all__ = ["LimitStore"]


class LimitStore:
    """SQL for ``rate_counts`` and ``greylist``."""

    def __init__(self, *, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = threading.Lock()

    def load_counts(self, now: float) -> list[SlotAmount]:
        rows = self._reader.execute(
            "SELECT key, slot, amount, expires_at FROM rate_counts WHERE expires_at > ?", (now,)
        ).fetchall()
        return [SlotAmount(str(key), int(slot), float(amount), float(at)) for key, slot, amount, at in rows]

    def greylist_entry(self, triplet: str) -> GreyEntry | None:
        row = self._reader.execute(
            "SELECT first_seen, last_seen, passed FROM greylist WHERE triplet = ?", (triplet,)
        ).fetchone()
        return None if row is None else GreyEntry(float(row[0]), float(row[1]), bool(row[2]))

    def write(
        self,
        counts: list[SlotAmount],
        entries: dict[str, GreyEntry],
        *,
        purge_before: tuple[float, float, float] | None = None,
    ) -> list[SlotTotal]:
        """One transaction: add ``counts``, store ``entries``; returns the new totals of those counts.

        ``purge_before`` = (now, unconfirmed cut-off, confirmed cut-off) also deletes expired rows.
        """
        totals: list[SlotTotal] = []
        with self._lock:
            db = self._writer
            begin_immediate(db)
            try:
                for item in counts:
                    (total,) = db.execute(
                        "INSERT INTO rate_counts (key, slot, amount, expires_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (key, slot) DO UPDATE SET amount = amount + excluded.amount"
                        " RETURNING amount",
                        (item.key, item.slot, item.amount, item.expires_at),
                    ).fetchone()
                    totals.append(SlotTotal(item.key, item.slot, float(total)))
                db.executemany(
                    "INSERT INTO greylist (triplet, first_seen, last_seen, passed) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (triplet) DO UPDATE SET first_seen = excluded.first_seen,"
                    " last_seen = MAX(last_seen, excluded.last_seen), passed = excluded.passed",
                    [(key, e.first_seen, e.last_seen, int(e.passed)) for key, e in entries.items()],
                )
                if purge_before is not None:
                    now, unconfirmed, confirmed = purge_before
                    db.execute("DELETE FROM rate_counts WHERE expires_at <= ?", (now,))
                    db.execute(
                        "DELETE FROM greylist WHERE last_seen < ? OR (passed = 0 AND last_seen < ?)",
                        (confirmed, unconfirmed),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return totals
