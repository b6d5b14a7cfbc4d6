"""Rate counters: sliding-window estimates per key, kept in memory and handed out in batches for writing.

Theory of operation. Time is cut into slots one ``period`` long; each (key, slot) holds an amount (a count,
or bytes). The amount used "in the last period" is estimated as Cloudflare's sliding window does: all of the
current slot plus the previous slot's amount weighted by how much of it still lies inside the window. Two
numbers per key, no log of events, and amounts are *added*, never replaced: several nodes (or a restart)
combine by summing, which is what the database does when a batch is written (``limitstore.py``).

Amounts not yet written are ``pending``; ``take_batch`` moves them to ``in_flight`` while a write runs;
``written`` (the totals the database now holds) or ``write_failed`` (back to pending) ends it. Nothing here
does I/O or reads a clock: ``now`` is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rate", "RateCounters", "SlotAmount", "SlotTotal"]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``limit`` per ``period`` seconds (a limit of 0 or less: no limit)."""

    name: str
    limit: float
    period: float


@dataclass(frozen=True, slots=True)
class SlotAmount:
    """An amount to add to (key, slot) in the database; the row may go once ``expires_at`` passed."""

    key: str
    slot: int
    amount: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class SlotTotal:
    """What the database holds for (key, slot) after a write (every node's amounts)."""

    key: str
    slot: int
    total: float


class _Count:
    __slots__ = ("expires_at", "in_flight", "pending", "written")

    def __init__(self, expires_at: float) -> None:
        self.written = 0.0
        self.pending = 0.0
        self.in_flight = 0.0
        self.expires_at = expires_at

    @property
    def total(self) -> float:
        return self.written + self.in_flight + self.pending


class RateCounters:
    """Amounts per (rate, subject), e.g. ("recipients", "alice@example.org")."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], _Count] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def used(self, rate: Rate, subject: str, now: float) -> float:
        """The amount used in the ``period`` seconds before ``now`` (estimated)."""
        key = _key(rate, subject)
        slot, into = divmod(now, rate.period)
        current = self._counts.get((key, int(slot)))
        previous = self._counts.get((key, int(slot) - 1))
        weight = 1.0 - into / rate.period
        return (previous.total * weight if previous else 0.0) + (current.total if current else 0.0)

    def exceeds(self, rate: Rate, subject: str, now: float, amount: float = 1.0) -> bool:
        """Whether ``amount`` more would go over the limit (counting nothing)."""
        return rate.limit > 0 and self.used(rate, subject, now) + amount > rate.limit

    def admit(self, rate: Rate, subject: str, now: float, amount: float = 1.0) -> bool:
        """Count ``amount`` and say True if it fits under the limit; else count nothing and say False."""
        if self.exceeds(rate, subject, now, amount):
            return False
        self.add(rate, subject, now, amount)
        return True

    def add(self, rate: Rate, subject: str, now: float, amount: float) -> None:
        """Count ``amount`` whatever the limit (bytes are known only after the message)."""
        if rate.limit <= 0 or amount <= 0:
            return
        slot = int(now // rate.period)
        count = self._counts.get((_key(rate, subject), slot))
        if count is None:
            count = self._counts[(_key(rate, subject), slot)] = _Count((slot + 2) * rate.period)
        count.pending += amount

    # --- writing behind ---------------------------------------------------------------------------------

    def load(self, totals: list[SlotAmount]) -> None:
        """Amounts read from the database at start (already written: not written again)."""
        for row in totals:
            count = self._counts.setdefault((row.key, row.slot), _Count(row.expires_at))
            count.written = row.amount

    def take_batch(self, now: float) -> list[SlotAmount]:
        """Pending amounts to write (now in flight); slots past their window are forgotten here."""
        batch: list[SlotAmount] = []
        expired: list[tuple[str, int]] = []
        for (key, slot), count in self._counts.items():
            if count.pending:
                batch.append(SlotAmount(key, slot, count.pending, count.expires_at))
                count.in_flight, count.pending = count.pending, 0.0
            elif count.expires_at <= now and not count.in_flight:
                expired.append((key, slot))
        for item in expired:
            del self._counts[item]
        return batch

    def written(self, totals: list[SlotTotal]) -> None:
        """The batch is in the database; ``totals`` include other nodes' amounts."""
        for row in totals:
            count = self._counts.get((row.key, row.slot))
            if count is not None:
                count.written = row.total
                count.in_flight = 0.0

    def write_failed(self, batch: list[SlotAmount]) -> None:
        """The batch was not written: its amounts wait for the next write."""
        for row in batch:
            count = self._counts.get((row.key, row.slot))
            if count is not None:
                count.pending += count.in_flight
                count.in_flight = 0.0


def _key(rate: Rate, subject: str) -> str:
    return f"{rate.name}:{subject}"
