"""The queue's values: what goes in (Envelope, Recipient), what comes out (DueRecipient), what comes back
(Outcome), and the one error a caller must handle (QueueError). No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CommitStats", "DueRecipient", "Envelope", "Outcome", "QueueError", "Recipient", "Result"]

Result = Literal["delivered", "temporary", "permanent"]


class QueueError(OSError):
    """The queue could not store a message (disk full, I/O error); nothing was acknowledged.

    A subclass of OSError because that is what it is: callers that already turn storage errors into
    451/452 replies handle it without a second ``except``.
    """


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT: the address as the client gave it, and the local mailbox ("user@domain", lower-case)."""

    address: str
    mailbox: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The SMTP envelope of one message. ``sender`` "" is the null reverse-path ``<>``."""

    sender: str
    recipients: tuple[Recipient, ...]
    client_ip: str = ""
    helo: str = ""

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("an envelope needs at least one recipient")


@dataclass(frozen=True, slots=True)
class DueRecipient:
    """A recipient claimed for delivery. ``attempts`` counts this attempt (1 on the first try)."""

    queue_id: str
    idx: int
    address: str
    mailbox: str
    sender: str
    attempts: int
    received_at: float
    body: bytes | None = None  # the message itself when it is small enough to live in the index


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt to one recipient came to; ``detail`` is for the log (and later the DSN)."""

    queue_id: str
    idx: int
    result: Result
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CommitStats:
    """Group-commit counters since start: batches (one directory fsync + one transaction each), messages."""

    batches: int
    messages: int
    largest_batch: int
