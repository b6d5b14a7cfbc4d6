"""The queue's values: what goes in (Envelope, Recipient), what comes out (DueRecipient), what comes back
(Outcome), and the one error a caller must handle (QueueError). No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CommitStats",
    "DueRecipient",
    "Envelope",
    "FailedMessage",
    "FailedRecipient",
    "Outcome",
    "QueueError",
    "Recipient",
    "Result",
    "Transport",
]

Result = Literal["delivered", "temporary", "permanent"]
Transport = Literal["local", "smtp"]  # local: a Maildir on this host; smtp: another domain's MX


class QueueError(OSError):
    """The queue could not store a message (disk full, I/O error); nothing was acknowledged.

    A subclass of OSError because that is what it is: callers that already turn storage errors into
    451/452 replies handle it without a second ``except``.
    """


@dataclass(frozen=True, slots=True)
class Recipient:
    """One RCPT: the address as the client gave it, and where it goes: for ``local`` the mailbox
    ("user@domain", lower-case); for ``smtp`` the remote address (local part kept, domain lower-cased)."""

    address: str
    mailbox: str
    transport: Transport = "local"
    notify: str = ""  # DSN NOTIFY (RFC 3461 4.1): "NEVER" or e.g. "SUCCESS,FAILURE"; "" when not given
    orcpt: str = ""  # DSN ORCPT (RFC 3461 4.2) decoded: "rfc822;user@example.test"; "" when not given


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The SMTP envelope of one message. ``sender`` "" is the null reverse-path ``<>``."""

    sender: str
    recipients: tuple[Recipient, ...]
    client_ip: str = ""
    helo: str = ""
    ret: str = ""  # DSN RET (RFC 3461 4.3): "FULL", "HDRS" or "" (not given)
    envid: str = ""  # DSN ENVID (RFC 3461 4.4), decoded; "" when not given

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
    transport: Transport = "local"
    notify: str = ""  # DSN parameters as in Recipient and Envelope (passed on to a next hop offering DSN)
    orcpt: str = ""
    ret: str = ""
    envid: str = ""

    @property
    def domain(self) -> str:
        """The domain part of ``mailbox`` (lower case): remote recipients are grouped by it."""
        return self.mailbox.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt to one recipient came to; ``detail`` is for the log and the DSN.

    For remote deliveries ``status`` is the enhanced status ("5.1.1"), ``remote_mta`` the host that answered
    and ``diagnostic`` its reply ("550 5.1.1 No such user"): the DSN's Status, Remote-MTA, Diagnostic-Code.
    """

    queue_id: str
    idx: int
    result: Result
    detail: str = ""
    status: str = ""
    remote_mta: str = ""
    diagnostic: str = ""
    # For "delivered": the DSN action a NOTIFY=SUCCESS gets (RFC 3464 2.3.3): "delivered" (final delivery),
    # "relayed" (handed to a next hop without DSN), or "" (the next hop took NOTIFY on and reports itself).
    success_action: str = "delivered"


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """A recipient given up on (permanent failure or expiry), with what the DSN says about it."""

    address: str
    status: str  # enhanced status code, e.g. "5.1.1" or "4.4.7" (expired)
    detail: str
    remote_mta: str = ""
    diagnostic: str = ""
    expired: bool = False
    action: str = "failed"  # RFC 3464 2.3.3: failed, delayed, delivered or relayed
    orcpt: str = ""  # the recipient's DSN ORCPT ("rfc822;user@example.test"), for Original-Recipient
    will_retry_until: float | None = None  # for "delayed": when the queue gives up (RFC 3464 2.3.7)


@dataclass(frozen=True, slots=True)
class FailedMessage:
    """The recipients of one message to report on from one ``Queue.record``: one DSN's worth (failures,
    and the delay warnings and success notices the DSN parameters ask for).

    ``headers`` is the original header section (raw CRLF bytes, bounded) for text/rfc822-headers;
    ``original`` the whole message when the sender asked for it (RET=FULL) and it is not too big.
    ``report_id`` is its row in the report outbox (outbox.py), None for one that was never stored: give it
    to ``Queue.commit`` with the DSN, and the row goes in the DSN's own transaction.
    """

    queue_id: str
    sender: str
    received_at: float
    recipients: tuple[FailedRecipient, ...]
    headers: bytes = b""
    ret: str = ""
    envid: str = ""
    original: bytes | None = None
    report_id: int | None = None


@dataclass(frozen=True, slots=True)
class CommitStats:
    """Group-commit counters since start: batches (one directory fsync + one transaction each), messages."""

    batches: int
    messages: int
    largest_batch: int
