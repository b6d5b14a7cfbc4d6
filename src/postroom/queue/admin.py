"""Operator actions on a queue that a running server may be using at the same time: list, show, retry,
hold, release, delete.

Every change is a short transaction of its own connection (SQLite WAL lets the server go on reading and
writing), bulk changes go in batches so the server's commits never wait long for the write lock, and a
deleted message's spool file is removed only after its rows are gone (a file without rows is what start-up
recovery already removes). The server needs no signal: its scheduler sees the changes at its next poll. The
SQL is in admin_index.py; this module checks queue ids, runs the batches and handles spool files. It never
claims or delivers anything.
"""

from __future__ import annotations

import io
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from postroom.queue.admin_index import (
    AdminIndex,
    Batch,
    MessageView,
    RecipientState,
    RecipientView,
    Selection,
    StateFilter,
)
from postroom.queue.local_form import prefix_length, wire_form
from postroom.store import open_database

__all__ = [
    "AdminError",
    "Deleted",
    "InvalidQueueIdError",
    "MessageView",
    "QueueAdmin",
    "RecipientState",
    "RecipientView",
    "Selection",
    "StateFilter",
    "UnknownMessageError",
    "open_queue_admin",
    "parse_queue_id",
    "read_headers",
]

_QUEUE_ID = re.compile(r"[0-9a-f]{16}")
_BATCH = 500  # rows per transaction in bulk changes: each one holds the write lock for milliseconds
_LOCAL_FORM_PEEK = 4096  # enough to see a mailbox-form file's trace headers (RFC 5321 address limits)
_MAX_HEADER_BYTES = 1024 * 1024


class AdminError(Exception):
    """A refused operator request; its text is one line, worded for the operator."""


class InvalidQueueIdError(AdminError):
    """Text that cannot be a queue id."""


class UnknownMessageError(AdminError):
    """A well-formed queue id that the queue does not hold (never did, or it has left)."""

    def __init__(self, queue_ids: list[str]) -> None:
        noun = "message" if len(queue_ids) == 1 else "messages"
        super().__init__(f"no {noun} {', '.join(queue_ids)} in the queue")
        self.queue_ids = queue_ids


@dataclass(frozen=True, slots=True)
class Deleted:
    """What a delete removed; ``stray_files``: spool files that could not be unlinked (the rows are gone)."""

    messages: int
    stray_files: tuple[str, ...] = ()


def parse_queue_id(text: str) -> str:
    """A queue id as postroom prints it ("queued as 0006...": 16 hex digits); upper case is accepted."""
    queue_id = text.strip().lower()
    if not _QUEUE_ID.fullmatch(queue_id):
        raise InvalidQueueIdError(f"{text!r} is not a queue id (16 hex digits, as in 'queued as ...')")
    return queue_id


def read_headers(stream: BinaryIO, *, limit: int = _MAX_HEADER_BYTES) -> bytes:
    """The header section of a message: every line up to the first empty one (at most ``limit`` bytes)."""
    lines: list[bytes] = []
    total = 0
    for line in stream:
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
        total += len(line)
        if total >= limit:
            break
    return b"".join(lines)


def open_queue_admin(
    *,
    database_path: Path,
    queue_dir: Path,
    clock: Callable[[], float] = time.time,
    progress: Callable[[int], None] | None = None,
) -> QueueAdmin:
    """A QueueAdmin on its own connection to an existing queue database (close it, or use ``with``)."""
    if not database_path.is_file():
        raise AdminError(f"no queue database at {database_path} (is data_dir right? has the server run?)")
    conn = open_database(database_path)
    return QueueAdmin(conn=conn, queue_dir=queue_dir, clock=clock, progress=progress)


class QueueAdmin:
    """The operator's view of one queue: a database connection it owns, and the spool directory."""

    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        queue_dir: Path,
        clock: Callable[[], float] = time.time,
        batch: int = _BATCH,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._conn = conn
        self._progress = progress  # told the running count after each batch of a bulk change
        self._batch = max(1, batch)
        self._index = AdminIndex(conn)
        self._spool_dir = queue_dir / "spool"
        self._clock = clock

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> QueueAdmin:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- reading -------------------------------------------------------------------------------------

    def messages(self, selection: Selection | None = None) -> Iterator[MessageView]:
        """Matching messages, oldest first, streamed."""
        return self._index.messages(selection or Selection())

    def summary(self) -> tuple[int, float]:
        """How many messages the queue holds and the oldest one's age in seconds (0 when empty)."""
        count, oldest = self._index.summary()
        return count, 0.0 if oldest is None else max(0.0, self._clock() - oldest)

    def message(self, queue_id: str) -> MessageView:
        """One message; raises UnknownMessageError when the queue does not hold it."""
        views = self._index.messages(Selection(queue_ids=(queue_id,)))
        try:
            return next(views)
        except StopIteration:
            raise UnknownMessageError([queue_id]) from None
        finally:
            views.close()

    def open_content(self, view: MessageView) -> BinaryIO:
        """The message as received (headers and body): its inline body or its spool file, a file in a
        mailbox's form (local_form.py) given back in wire form.

        Raises UnknownMessageError when it left the queue meanwhile (delivered, or deleted).
        """
        if not view.spooled:
            body = self._index.body(view.queue_id)
            if body is None:
                raise UnknownMessageError([view.queue_id])
            return io.BytesIO(body)
        try:
            file = open(self._spool_dir / view.queue_id, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise UnknownMessageError([view.queue_id]) from None
        if prefix_length(file.peek(_LOCAL_FORM_PEEK)[:_LOCAL_FORM_PEEK]) == 0:
            return file
        with file:
            return io.BytesIO(wire_form(file.read()))

    # --- changing ------------------------------------------------------------------------------------

    def retry(self, selection: Selection) -> int:
        """Makes the selected queued recipients of active messages due now; returns how many are due.

        A delivery under way keeps its recipient (no second attempt in parallel); held messages stay held.
        """
        self._check_known(selection)
        now = self._clock()
        _, upto = self._index.max_rowids()
        return self._in_batches(
            lambda after: self._index.retry(selection, now=now, after=after, upto=upto, limit=self._batch)
        )

    def claim_for_bounce(self, queue_id: str, *, lease: float) -> tuple[list[int], int]:
        """Takes the pending recipients of one message away from delivery for ``lease`` seconds, for the
        caller to fail them (``Queue.record``) and bounce them. Returns their idx, and how many recipients
        a delivery under way holds (those are left to it). Raises UnknownMessageError."""
        self._check_known(Selection(queue_ids=(queue_id,)))
        now = self._clock()
        return self._index.claim_pending(queue_id, now=now, lease_until=now + lease)

    def hold(self, selection: Selection) -> int:
        """Holds the selected messages (never claimed until released); returns how many were not held."""
        return self._set_status(selection, "held")

    def release(self, selection: Selection) -> int:
        """Releases held messages; they go on with their retry schedule. Returns how many were held."""
        return self._set_status(selection, "active")

    def delete(self, selection: Selection) -> Deleted:
        """Removes the selected messages: their rows (one transaction per batch), then their spool files.

        A delivery already under way may still complete; its outcome is then ignored (see Index.record).
        """
        self._check_known(selection)
        upto, _ = self._index.max_rowids()
        stray: list[str] = []

        def one_batch(after: int) -> Batch:
            batch = self._index.delete(selection, after=after, upto=upto, limit=self._batch)
            stray.extend(self._unlink_spool_files(batch))
            return batch

        return Deleted(self._in_batches(one_batch), tuple(stray))

    def _set_status(self, selection: Selection, status: Literal["active", "held"]) -> int:
        self._check_known(selection)
        upto, _ = self._index.max_rowids()
        return self._in_batches(
            lambda after: self._index.set_status(selection, status, after=after, upto=upto, limit=self._batch)
        )

    def _check_known(self, selection: Selection) -> None:
        """Explicit ids must all be in the queue, else nothing is changed."""
        if selection.queue_ids is None:
            return
        known = self._index.existing(selection.queue_ids)
        missing = [queue_id for queue_id in selection.queue_ids if queue_id not in known]
        if missing:
            raise UnknownMessageError(missing)

    def _in_batches(self, run: Callable[[int], Batch]) -> int:
        """Runs batches from rowid 0 on until one changes nothing; returns the rows changed in all."""
        total = 0
        after = 0
        while True:
            batch = run(after)
            total += batch.count
            if self._progress is not None:
                self._progress(total)
            if batch.last_rowid is None:
                return total
            after = batch.last_rowid

    def _unlink_spool_files(self, batch: Batch) -> list[str]:
        stray: list[str] = []
        for queue_id, spooled in batch.changed:
            if not spooled:
                continue
            path = self._spool_dir / queue_id
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                stray.append(f"{path}: {exc.strerror or exc}")
        return stray
