"""The Queue facade: accept (spool + group commit), recover at start, hand out due work, record outcomes.

Sessions use ``open_spool`` and ``commit`` on the event loop; delivery threads use ``claim_due``, ``record``
and ``release`` (synchronous, thread-safe: one connection behind a lock). The SQL is in index.py, the files
in spool.py, the batching in commit.py, the retry arithmetic in schedule.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger, sanitize
from postroom.queue.commit import GroupCommitter
from postroom.queue.commit_process import ProcessCommitter
from postroom.queue.index import HEADERS_MAX, Index, NewMessage, Recorded, header_section
from postroom.queue.local_form import local_prefix, wire_form
from postroom.queue.model import (
    CommitStats,
    DueRecipient,
    Envelope,
    FailedMessage,
    Outcome,
    QueueError,
    Recipient,
)
from postroom.queue.notify import ORIGINAL_MAX
from postroom.queue.spool import Spool, SpoolWriter
from postroom.store import open_database

__all__ = ["Queue"]

_MISSING_LOGGED = 100  # warnings for spool files missing at start, at most (then only the count in each)


class Queue:
    """The durable queue of one node: spool files under ``queue_dir``, the index in ``database_path``."""

    def __init__(
        self,
        *,
        settings: QueueSettings,
        queue_dir: Path,
        database_path: Path,
        clock: Callable[[], float] = time.time,
        log: Logger,
        random: Callable[[], float] | None = None,
        id_slot: int = 0,
    ) -> None:
        """``id_slot``: this process's digit in queue ids (Spool); the server's workers have 1..15."""
        self._settings = settings
        self._database_path = database_path
        self._clock = clock
        self._log = log
        self._random = random  # jitter for retry times; None keeps the schedule exact
        self._spool = Spool(queue_dir=queue_dir, clock=clock, id_slot=id_slot)
        self._work = asyncio.Event()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._committer: GroupCommitter | ProcessCommitter | None = None
        self._commit_conn: sqlite3.Connection | None = None

    def update(self, settings: QueueSettings) -> None:
        """New settings (SIGHUP): the retry schedule, lifetime, delay warning and claim lease apply to the
        next claim and the next outcome recorded; commit_max_batch and inline_max wait for a restart."""
        self._settings = settings

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Opens the database, recovers the spool (see ``Spool.recover``), starts the commit worker."""
        self._work = asyncio.Event()  # made here: it belongs to the loop that runs the queue
        commit_conn = await asyncio.to_thread(self._open_and_recover)
        if self._settings.commit_process:  # its own process, its own connection (commit_process.py)
            commit_conn.close()
            committer = ProcessCommitter(
                database_path=self._database_path,
                spool_dir=self._spool.spool_dir,
                max_batch=self._settings.commit_max_batch,
                log=self._log,
                on_commit=self._work.set,
            )
            self._committer = committer
            await committer.start()
        else:
            self._committer = GroupCommitter(
                spool=self._spool,
                conn=commit_conn,
                max_batch=self._settings.commit_max_batch,
                log=self._log,
                on_commit=self._work.set,
            )
            self._commit_conn = commit_conn
            self._committer.start()
        self._spool.prepared.start()
        self._work.set()  # recovered messages may be due

    def _open_and_recover(self) -> sqlite3.Connection:
        self._spool.create()
        sole_owner = self._spool.acquire()
        commit_conn = open_database(self._database_path)
        try:
            # Claims and outcomes: losing the last of them in a power cut means a delivery is made once
            # more, never that a message is lost; so they need not wait for the disk (see open_database).
            self._conn = open_database(self._database_path, durable=False)
            known = Index(commit_conn).known_ids()
            spooled = Index(commit_conn).spooled_ids()
            report = self._spool.recover(known, sole_owner=sole_owner, spooled_ids=spooled)
            # Reports leased by a process that is gone: bounced by this one's scheduler at once (outbox.py)
            reports = Index(commit_conn).release_reports(now=self._clock()) if sole_owner else 0
        except BaseException:
            commit_conn.close()
            self._close_connection()
            self._spool.release()
            raise
        self._spool.share()
        self._log.info(
            "queue.recovered",
            messages=len(known),
            removed_spool=report.removed_spool,
            removed_incoming=report.removed_incoming,
            sole_owner=sole_owner,
            pending_reports=reports,
        )
        for queue_id in report.missing_spool[:_MISSING_LOGGED]:
            # Not from a crash (a file goes only after its row's removal is on disk): removed by hand, or
            # the file system lost it. Delivery fails such a message, and its sender gets a bounce.
            self._log.warning("queue.spool_missing", queue_id=queue_id, missing=len(report.missing_spool))
        return commit_conn

    async def stop(self) -> None:
        """Finishes the commits already submitted, then closes the database and the lock."""
        self._spool.prepared.stop()
        if self._committer is not None:
            await self._committer.stop()
            self._committer = None
        if self._commit_conn is not None:
            self._commit_conn.close()
            self._commit_conn = None
        with self._lock:
            self._close_connection()
        self._spool.release()

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- accepting (event loop) ----------------------------------------------------------------------

    def open_spool(self, *, sender: str | None = None, recipients: Sequence[Recipient] = ()) -> SpoolWriter:
        """A writer for one incoming message. Raises QueueError when no spool file can be created.

        Given the envelope so far: a message for exactly one local mailbox is spooled in that mailbox's
        form, so that local delivery links the file instead of copying it (local_form.py).
        """
        prefix = b""
        if sender is not None and len(recipients) == 1 and recipients[0].transport == "local":
            prefix = local_prefix(sender=sender, mailbox=recipients[0].mailbox)
        return self._spool.open_writer(inline_max=self._settings.inline_max, local_prefix=prefix)

    async def commit(self, writer: SpoolWriter, envelope: Envelope, *, report_id: int | None = None) -> str:
        """Returns the queue id once the file, its directory entry and the index rows are all on disk.

        Raises QueueError (the file is then removed; the client must not get a 250). ``report_id``: this
        message is the DSN of that outbox report, which leaves the outbox in the same transaction.
        """
        if self._committer is None:
            writer.abort()
            raise QueueError("the queue is not running")
        writer.seal()
        message = NewMessage(
            writer.queue_id, envelope, writer.size, self._clock(), writer.inline_body, report_id=report_id
        )
        try:
            future = self._committer.submit(writer, message)
        except QueueError:
            writer.remove()
            raise
        return await future

    def wait_for_work(self) -> asyncio.Event:
        """Set after every commit batch (and at start); the scheduler clears it before it claims."""
        return self._work

    def commit_stats(self) -> CommitStats:
        return self._committer.stats() if self._committer is not None else CommitStats(0, 0, 0)

    # --- delivering (any thread) ---------------------------------------------------------------------

    def claim_due(self, *, limit: int) -> list[DueRecipient]:
        """Due recipients; each one's next attempt moves a lease ahead (committed) before returning."""
        now = self._clock()
        with self._lock:
            return Index(self._connection()).claim(
                now=now, lease_until=now + self._settings.claim_lease, limit=limit
            )

    def release(self, recipients: Sequence[DueRecipient]) -> None:
        """Gives back claimed recipients never attempted (shutdown): due again now, attempt uncounted."""
        if recipients:
            with self._lock:
                Index(self._connection()).release(recipients, now=self._clock())

    def record(self, outcomes: Sequence[Outcome]) -> list[FailedMessage]:
        """Applies outcomes in one transaction, then removes finished messages' spool files.

        Returns the reports this call made (failures, and the delay warnings and success notices NOTIFY
        asks for), one per message, with the message's original headers, for the caller to queue as DSNs
        (``commit(..., report_id=)``). They are in the report outbox already, stored in the outcomes' own
        transaction: if the caller never queues them, ``claim_reports`` hands them out again after the
        claim lease. Messages from the null sender get none: never a bounce for a bounce (RFC 5321 4.5.5).

        A spool file is unlinked only once the commit that removed its message is on disk: outcomes are
        committed without waiting for the disk (a lost outcome means one more delivery), but a lost
        removal with its file gone would bring the message back with nothing to deliver, a false bounce.
        So when any of these messages has a spool file the commit is a FULL one, whose fsync of the WAL
        also covers the earlier unsynced commits (claims, outcomes) of every connection.
        """
        if not outcomes:
            return []
        with self._lock:
            conn = self._connection()
            index = Index(conn)
            durable = index.any_spooled([outcome.queue_id for outcome in outcomes])
            if durable:
                conn.execute("PRAGMA synchronous = FULL")  # not allowed inside the transaction: set before
            try:
                recorded, removed, reports = index.record(
                    outcomes,
                    now=self._clock(),
                    settings=self._settings,
                    read_spooled=self._read_spooled,
                    random=self._random,
                )
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")
        for item in recorded:
            self._log_recorded(item)
        for queue_id, has_file in removed:
            if has_file:
                self._spool.path(queue_id).unlink(missing_ok=True)
            self._log.info("message.removed", queue_id=queue_id)
        return reports

    def claim_reports(self, *, limit: int) -> list[FailedMessage]:
        """Reports in the outbox not queued yet whose lease ended (a failed or interrupted bounce); each is
        leased to the caller for ``claim_lease`` seconds."""
        now = self._clock()
        with self._lock:
            return Index(self._connection()).claim_reports(
                now=now, lease_until=now + self._settings.claim_lease, limit=limit
            )

    def pending_reports(self) -> int:
        """Reports in the outbox whose DSN is not queued yet (leased or not)."""
        with self._lock:
            return Index(self._connection()).count_reports()

    def _read_spooled(self, queue_id: str, full: bool) -> tuple[bytes, bytes | None]:
        """A spooled message's header section and, when ``full``, the whole message if it is not too big
        (RET=FULL, RFC 3461 4.3); called inside the record transaction, before the file is removed."""
        try:
            with open(self._spool.path(queue_id), "rb") as file:
                headers = header_section(wire_form(file.read(HEADERS_MAX))[:HEADERS_MAX])
                if not full:
                    return headers, None
                file.seek(0)
                data = file.read(ORIGINAL_MAX + 1)
        except OSError:
            return b"", None
        message = wire_form(data)  # the file may be in a mailbox's form
        return headers, message if len(data) <= ORIGINAL_MAX and len(message) <= ORIGINAL_MAX else None

    def _log_recorded(self, item: Recorded) -> None:
        fields = {
            "queue_id": item.queue_id,
            "rcpt": sanitize(item.address),
            "attempts": item.attempts,
            "transport": item.transport,
            "delay": round(max(0.0, self._clock() - item.received_at), 3),  # Postfix's delay=: since queued
        }
        if item.state == "delivered":
            self._log.info("delivery.delivered", **fields)
        elif item.state == "deferred":
            self._log.info(
                "delivery.deferred", **fields, error=sanitize(item.detail), retry_at=item.next_attempt_at
            )
        else:
            self._log.info("delivery.failed", **fields, error=sanitize(item.detail))

    def spool_path(self, queue_id: str) -> Path:
        return self._spool.path(queue_id)

    def message_count(self) -> int:
        with self._lock:
            return Index(self._connection()).count_active()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the queue is not running")
        return self._conn
