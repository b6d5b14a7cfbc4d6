"""The durable queue: accept messages (spool file + index row, fsynced, grouped), hand out due work, record
outcomes, retry on a schedule."""

from postroom.queue.model import (
    CommitStats,
    DueRecipient,
    Envelope,
    FailedMessage,
    FailedRecipient,
    Outcome,
    QueueError,
    Recipient,
    Transport,
)
from postroom.queue.repository import Queue
from postroom.queue.spool import SpoolWriter

__all__ = [
    "CommitStats",
    "DueRecipient",
    "Envelope",
    "FailedMessage",
    "FailedRecipient",
    "Outcome",
    "Queue",
    "QueueError",
    "Recipient",
    "SpoolWriter",
    "Transport",
]
