"""Local delivery: one queued recipient into its Maildir, with Return-Path and Delivered-To prepended.

It does not pick recipients (scheduler.py), decide retry timing (queue) or classify errors (outcome.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from postroom.delivery.outcome import SpoolFileMissingError, delivered, failed
from postroom.mailbox import Maildir, Maildirs
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
        return self.deliver_batch([recipient])[0]

    def deliver_batch(self, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        """Delivers each recipient, then fsyncs each Maildir's new/ once for the whole batch: a message
        counts as delivered only after the fsync of the folder it was renamed into."""
        outcomes: list[Outcome] = []
        written: dict[Path, tuple[Maildir, list[int]]] = {}
        for recipient in recipients:
            try:
                maildir, name = self._write(recipient)
            except (OSError, ValueError, SpoolFileMissingError) as exc:
                outcomes.append(failed(recipient, exc))
                continue
            outcomes.append(delivered(recipient, detail=name))
            written.setdefault(maildir.path, (maildir, []))[1].append(len(outcomes) - 1)
        for maildir, indexes in written.values():
            try:
                maildir.sync_new_folder()
            except OSError as exc:
                for index in indexes:
                    outcomes[index] = failed(recipients[index], exc)
        return outcomes

    def _write(self, recipient: DueRecipient) -> tuple[Maildir, str]:
        if recipient.body is not None:
            source: BinaryIO = io.BytesIO(recipient.body)
        else:
            try:
                source = open(self._spool_path(recipient.queue_id), "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise SpoolFileMissingError(f"spool file of {recipient.queue_id} is missing") from None
        with source:
            maildir = self._maildirs.for_address(recipient.mailbox)
            headers = trace_headers(sender=recipient.sender, mailbox=recipient.mailbox)
            return maildir, maildir.deliver(source, prefix_headers=headers, sync_new=False)
