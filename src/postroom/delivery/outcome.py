"""The one place that decides whether a failed delivery is temporary (retry) or permanent (give up).

The rule, for local delivery: anything an administrator can fix is temporary, so the message waits (up to
the queue's max_lifetime) instead of bouncing. That covers every OSError of the mailbox side: ENOSPC and
EDQUOT (disk or quota full), EACCES/EPERM (permissions), EROFS, EIO, EMFILE, and ENOTDIR/EEXIST (a file
where a mailbox folder should be). Permanent: ENAMETOOLONG (the address can never map to a file name), an
address that cannot name a mailbox (ValueError), and a queued message whose spool file is gone (nothing
left to deliver). Anything else is a bug and counts as temporary: the message stays while the bug is fixed.

For remote delivery (RFC 5321 4.2.1, 4.5.4.1): a 2xx reply delivered, 4xx temporary, 5xx permanent.
Connection, TLS and timeout errors are temporary (another attempt may find the host up). DNS errors carry
their own answer: a timeout or SERVFAIL is temporary; NXDOMAIN, no address at all, a null MX (RFC 7505) or
an MX pointing back at us are permanent. A protocol error carries a reply: ours, when we can never send this
message to that server (no SMTPUTF8, over its SIZE), is permanent; a garbled or cut-off reply is temporary.
"""

from __future__ import annotations

import errno
import ssl
from typing import Literal

from postroom.dns import DnsError, MxLoop, NullMx
from postroom.queue import DueRecipient, Outcome
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Reply

__all__ = [
    "MailLoopError",
    "SpoolFileMissingError",
    "classify",
    "delivered",
    "describe",
    "failed",
    "replied",
    "status_of",
]

_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG})


class SpoolFileMissingError(Exception):
    """The index holds a message whose spool file is gone: there is nothing left to deliver."""


class MailLoopError(Exception):
    """The message went round too often (too many Received: headers, RFC 5321 6.3): never try again."""


def classify(exc: BaseException) -> Literal["temporary", "permanent"]:
    if isinstance(exc, ssl.SSLError):  # a failed certificate check is a ValueError too; it may be fixed
        return "temporary"
    if isinstance(exc, DnsError):
        return "temporary" if exc.temporary else "permanent"
    if isinstance(exc, SmtpError):
        return "permanent" if exc.reply.is_permanent else "temporary"
    if isinstance(exc, SpoolFileMissingError | ValueError | MailLoopError):
        return "permanent"
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return "permanent"
    return "temporary"


def status_of(exc: BaseException) -> str:
    """The enhanced status (RFC 3463) a DSN gives for ``exc``."""
    if isinstance(exc, NullMx):
        return "5.1.10"  # RFC 7505 4.3
    if isinstance(exc, MxLoop | MailLoopError):
        return "5.4.6"  # routing loop detected
    if isinstance(exc, DnsError):
        return "4.4.3" if exc.temporary else "5.1.2"  # directory server failure / bad destination system
    if isinstance(exc, SmtpError):
        status = exc.reply.status
        return str(status) if status is not None else f"{exc.reply.code // 100}.0.0"
    if isinstance(exc, TimeoutError):
        return "4.4.2"  # bad connection
    if isinstance(exc, ConnectionError | OSError) and classify(exc) == "temporary":
        return "4.4.1"  # no answer from host
    return "5.0.0" if classify(exc) == "permanent" else "4.0.0"


def describe(exc: BaseException) -> str:
    """A short reason without server paths (it may reach the sender in a DSN): "No space left (ENOSPC)"."""
    if isinstance(exc, DnsError):
        return str(exc)
    if isinstance(exc, SmtpError):
        return str(exc.reply).replace("\n", " ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or 'I/O error'} ({name})"
    return str(exc) or type(exc).__name__


def failed(recipient: DueRecipient, exc: BaseException, *, remote_mta: str = "") -> Outcome:
    return Outcome(
        recipient.queue_id,
        recipient.idx,
        classify(exc),
        describe(exc),
        status=status_of(exc) if recipient.transport == "smtp" else "",
        remote_mta=remote_mta,
    )


def replied(
    recipient: DueRecipient, reply: Reply, *, remote_mta: str, next_hop_reports: bool = False
) -> Outcome:
    """The outcome a remote server's reply gives: 2xx delivered, 4xx temporary, 5xx permanent.

    ``next_hop_reports``: the server offered DSN and was given NOTIFY, so a success notice is its to send;
    otherwise a NOTIFY=SUCCESS gets "relayed" from us (RFC 3461 5.2.2)."""
    text = str(reply).replace("\n", " ")
    status = str(reply.status) if reply.status is not None else f"{reply.code // 100}.0.0"
    if reply.is_positive:
        return Outcome(
            recipient.queue_id,
            recipient.idx,
            "delivered",
            f"{remote_mta}: {text}",
            status=status,
            remote_mta=remote_mta,
            success_action="" if next_hop_reports else "relayed",
        )
    return Outcome(
        recipient.queue_id,
        recipient.idx,
        "temporary" if reply.is_temporary else "permanent",
        f"{remote_mta} said: {text}",
        status=status,
        remote_mta=remote_mta,
        diagnostic=text,
    )


def delivered(recipient: DueRecipient, detail: str = "") -> Outcome:
    return Outcome(recipient.queue_id, recipient.idx, "delivered", detail)
