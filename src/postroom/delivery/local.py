"""Local delivery: one queued recipient into its Maildir, with Return-Path and Delivered-To prepended.

It does not pick recipients (scheduler.py), decide retry timing (queue) or classify errors (outcome.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from postroom.delivery.outcome import SpoolFileMissingError, delivered, failed
from postroom.mailbox import Maildirs
from postroom.queue import DueRecipient, Outcome

__all__ = ["LocalCourier", "trace_headers"]


def _header_value(text: str) -> bytes:
    # the envelope was checked by the protocol; still, no line break may ever reach a header
    return text.replace("\r", "").replace("\n", "").encode("utf-8", "surrogateescape")


def trace_headers(*, sender: str, mailbox: str) -> bytes:
    """RFC 5321 4.4: the final delivery adds Return-Path (``<>`` for the null sender); Delivered-To
    (Postfix's and qmail's) names the mailbox, so forwarding loops show and sieve scripts can match."""
    return (
        b"Return-Path: <" + _header_value(sender) + b">\r\nDelivered-To: " + _header_value(mailbox) + b"\r\n"
    )


class LocalCourier:
    """A Courier for mailboxes on this host. Thread-safe: it holds no state between deliveries."""

    def __init__(self, *, maildirs: Maildirs, spool_path: Callable[[str], Path]) -> None:
        self._maildirs = maildirs
        self._spool_path = spool_path

    def deliver(self, recipient: DueRecipient) -> Outcome:
        try:
            source = open(self._spool_path(recipient.queue_id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return failed(recipient, SpoolFileMissingError(f"spool file of {recipient.queue_id} is missing"))
        except OSError as exc:
            return failed(recipient, exc)
        with source:
            try:
                maildir = self._maildirs.for_address(recipient.mailbox)
                name = maildir.deliver(
                    source, prefix_headers=trace_headers(sender=recipient.sender, mailbox=recipient.mailbox)
                )
            except (OSError, ValueError) as exc:
                return failed(recipient, exc)
        return delivered(recipient, detail=name)
