"""Local delivery: one queued recipient into its Maildir, with Return-Path and Delivered-To prepended.

A spool file already in the mailbox's form (queue/local_form.py) is hard-linked into new/ (no copy, no
file fsync: the commit fsynced it); any other message, or a link that fails, is copied. It does not pick
recipients (scheduler.py), decide retry timing (queue) or classify errors (outcome.py).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from postroom.delivery.outcome import SpoolFileMissingError, delivered, failed
from postroom.mailbox import Maildir, Maildirs
from postroom.policy.sender_auth import JUNK_MARKER
from postroom.queue import DueRecipient, Outcome
from postroom.queue.local_form import local_prefix, prefix_length, trace_headers

__all__ = ["LocalCourier", "trace_headers"]

_PEEK = 4096  # enough for the trace headers of any address (RFC 5321 4.5.3.1 limits) and the junk marker
_JUNK_LF = JUNK_MARKER.replace(b"\r\n", b"\n")


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
        path: Path | None = None
        if recipient.body is not None:
            source: BinaryIO = io.BytesIO(recipient.body)
        else:
            path = self._spool_path(recipient.queue_id)
            try:
                source = open(path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise SpoolFileMissingError(f"spool file of {recipient.queue_id} is missing") from None
        with source:
            if path is not None:
                start = source.read(_PEEK)
                skip = prefix_length(start)
                if skip:
                    return self._write_local_form(recipient, source, start, skip, path)
                source.seek(0)
            # policy/sender_auth.py marks a DMARC-quarantined message at its very first octet ("junk")
            junk = source.read(len(JUNK_MARKER)) == JUNK_MARKER
            if not junk:
                source.seek(0)
            maildir = self._maildirs.for_address(recipient.mailbox, folder="Junk" if junk else None)
            headers = trace_headers(sender=recipient.sender, mailbox=recipient.mailbox)
            return maildir, maildir.deliver(source, prefix_headers=headers, sync_new=False)

    def _write_local_form(
        self, recipient: DueRecipient, source: BinaryIO, start: bytes, skip: int, path: Path
    ) -> tuple[Maildir, str]:
        """A spool file in Maildir form: link it when it is this mailbox's, not junk; else copy past its
        trace headers (and junk marker) with this recipient's own."""
        junk = start.startswith(_JUNK_LF, skip)
        expected = local_prefix(sender=recipient.sender, mailbox=recipient.mailbox)
        if not junk and start[:skip] == expected:
            maildir = self._maildirs.for_address(recipient.mailbox)
            try:
                return maildir, maildir.link(path, size=os.fstat(source.fileno()).st_size, sync_new=False)
            except FileNotFoundError:
                raise SpoolFileMissingError(f"spool file of {recipient.queue_id} is missing") from None
            except OSError:
                pass  # another file system (EXDEV), too many links...: copy it
        source.seek(skip + (len(_JUNK_LF) if junk else 0))
        maildir = self._maildirs.for_address(recipient.mailbox, folder="Junk" if junk else None)
        headers = trace_headers(sender=recipient.sender, mailbox=recipient.mailbox)
        return maildir, maildir.deliver(source, prefix_headers=headers, sync_new=False, source_is_lf=True)
