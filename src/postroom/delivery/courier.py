"""The Courier contract (as in chasquid): deliver one recipient, say how it went. No implementation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from postroom.queue import DueRecipient, Outcome

__all__ = ["Courier"]


class Courier(Protocol):
    """Delivers one claimed recipient and returns its Outcome; never raises for a delivery failure.

    Blocking: the scheduler calls it in a delivery worker thread, several at once (so it must be
    thread-safe). Failures become ``temporary`` or ``permanent`` through ``outcome.failed``.
    """

    def deliver(self, recipient: DueRecipient) -> Outcome: ...

    def deliver_batch(self, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        """One outcome per recipient, in order; lets a courier share work (a folder fsync, a connection)."""
        ...
