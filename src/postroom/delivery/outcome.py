"""The one place that decides whether a failed delivery is temporary (retry) or permanent (give up).

The rule, for local delivery: anything an administrator can fix is temporary, so the message waits (up to
the queue's max_lifetime) instead of bouncing. That covers every OSError of the mailbox side: ENOSPC and
EDQUOT (disk or quota full), EACCES/EPERM (permissions), EROFS, EIO, EMFILE, and ENOTDIR/EEXIST (a file
where a mailbox folder should be). Permanent: ENAMETOOLONG (the address can never map to a file name), an
address that cannot name a mailbox (ValueError), and a queued message whose spool file is gone (nothing
left to deliver). Anything else is a bug and counts as temporary: the message stays while the bug is fixed.
"""

from __future__ import annotations

import errno
from typing import Literal

from postroom.queue import DueRecipient, Outcome

__all__ = ["SpoolFileMissingError", "classify", "delivered", "describe", "failed"]

_PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG})


class SpoolFileMissingError(Exception):
    """The index holds a message whose spool file is gone: there is nothing left to deliver."""


def classify(exc: BaseException) -> Literal["temporary", "permanent"]:
    if isinstance(exc, SpoolFileMissingError | ValueError):
        return "permanent"
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return "permanent"
    return "temporary"


def describe(exc: BaseException) -> str:
    """A short reason without server paths (it may reach the sender in a DSN): "No space left (ENOSPC)"."""
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{exc.strerror or 'I/O error'} ({name})"
    return str(exc) or type(exc).__name__


def failed(recipient: DueRecipient, exc: BaseException) -> Outcome:
    return Outcome(recipient.queue_id, recipient.idx, classify(exc), describe(exc))


def delivered(recipient: DueRecipient, detail: str = "") -> Outcome:
    return Outcome(recipient.queue_id, recipient.idx, "delivered", detail)
