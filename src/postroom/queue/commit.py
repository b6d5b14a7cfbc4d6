"""Group commit: two worker threads make many sessions' messages durable with one directory fsync and one
SQLite transaction per batch, then wake each waiting session.

Theory of operation: sessions put (writer, message, future) on an inbox and await the future. The file
worker takes everything waiting (up to ``max_batch``). Messages that spilled to a spool file are
fdatasynced and renamed into ``spool/`` (in a small thread pool when there are many: parallel fdatasyncs
overlap), then ``spool/`` is fsynced once, and the batch goes to the index worker. That one puts all the
index rows of the batches waiting for it (with the bodies of the small, inline messages) in one
transaction (one WAL fsync), and only then are the futures resolved on their event loop. The two stages
overlap: one batch's files are synced while the previous batch's rows are committed, so a message never
waits for two whole rounds; small (inline) messages have no file and go straight to the index worker. A
row is still written only after its file is durable. While they work, the next batch gathers, so the
batch size follows the load. A message that fails is removed and its future gets QueueError; nothing was
acknowledged for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from postroom.observe.log import Logger
from postroom.queue.index import Index, NewMessage
from postroom.queue.model import CommitStats, QueueError
from postroom.queue.spool import Spool, SpoolWriter

__all__ = ["GroupCommitter"]

_SYNC_THREADS = 4
_PARALLEL_FROM = 4  # below this many files the pool's hand-off costs more than it overlaps


@dataclass(frozen=True, slots=True)
class _Pending:
    writer: SpoolWriter
    message: NewMessage
    future: asyncio.Future[str]
    loop: asyncio.AbstractEventLoop


_Failure = tuple[_Pending, BaseException]
_Stage = tuple[list[_Pending], list[_Failure], float]  # files durable (or inline), failed, started at


class GroupCommitter:
    """The commit worker thread; owns its database connection while it runs."""

    def __init__(
        self,
        *,
        spool: Spool,
        conn: sqlite3.Connection,
        max_batch: int,
        log: Logger,
        on_commit: Callable[[], None],
    ) -> None:
        self._spool = spool
        self._index = Index(conn)
        self._max_batch = max(1, max_batch)
        self._log = log
        self._on_commit = on_commit
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._indexing: queue.SimpleQueue[_Stage | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._index_thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._accepting = False
        self._batches = 0
        self._messages = 0
        self._largest = 0

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=_SYNC_THREADS, thread_name_prefix="postroom-fsync")
        self._thread = threading.Thread(target=self._run, name="postroom-commit", daemon=True)
        self._index_thread = threading.Thread(
            target=self._run_index, name="postroom-commit-index", daemon=True
        )
        self._accepting = True
        self._index_thread.start()
        self._thread.start()

    async def stop(self) -> None:
        """Commits everything already submitted, then ends the worker."""
        self._accepting = False
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._index_thread is not None:
            self._indexing.put(None)  # after everything the file worker handed on
            await asyncio.to_thread(self._index_thread.join)
            self._index_thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def submit(self, writer: SpoolWriter, message: NewMessage) -> asyncio.Future[str]:
        if not self._accepting:
            raise QueueError("the queue is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        pending = _Pending(writer, message, future, loop)
        if writer.spilled:
            self._inbox.put(pending)
        else:  # an inline body has no file to sync: straight to the index worker, one hand-off as before
            self._indexing.put(([pending], [], time.perf_counter()))
        return future

    def stats(self) -> CommitStats:
        return CommitStats(batches=self._batches, messages=self._messages, largest_batch=self._largest)

    # --- the worker threads --------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._inbox.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                self._indexing.put(self._sync_files(batch))
            except Exception as exc:  # a bug: fail this batch loudly, keep serving the next ones
                self._fail_loudly(batch, exc)

    def _run_index(self) -> None:
        carry: _Stage | None = None  # taken but over max_batch: first in the next transaction
        while (first := carry or self._indexing.get()) is not None:
            stages, carry = [first], None
            count = len(first[0])
            while count < self._max_batch:
                try:
                    item = self._indexing.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._indexing.put(None)  # seen again once these are committed: then the loop ends
                    break
                if count + len(item[0]) > self._max_batch:
                    carry = item
                    break
                stages.append(item)
                count += len(item[0])
            durable = [p for stage in stages for p in stage[0]]
            failed = [f for stage in stages for f in stage[1]]
            try:
                self._commit_batch(durable, failed, started=min(stage[2] for stage in stages))
            except Exception as exc:  # a bug: fail this batch loudly, keep serving the next ones
                self._fail_loudly(durable, exc)
                self._resolve([], failed)

    def _fail_loudly(self, batch: list[_Pending], exc: BaseException) -> None:
        self._log.failure("queue.commit_error", exc, messages=len(batch))
        for pending in batch:
            pending.writer.remove()
        self._resolve([], [(p, exc) for p in batch])

    def _sync_files(self, batch: list[_Pending]) -> _Stage:
        """Stage one: the spool files of a batch durable (data, then their names in ``spool/``)."""
        started = time.perf_counter()
        spilled = [p for p in batch if p.writer.spilled]
        durable, failed = self._make_files_durable(spilled) if spilled else ([], [])
        if durable:
            try:
                self._spool.sync()
            except OSError as exc:
                for pending in durable:
                    pending.writer.remove()
                failed.extend((p, exc) for p in durable)
                durable = []
        durable.extend(p for p in batch if not p.writer.spilled)  # inline: durable with the index rows
        return durable, failed, started

    def _commit_batch(self, durable: list[_Pending], failed: list[_Failure], *, started: float) -> None:
        """Stage two: the index rows of files already durable (and of inline messages), one transaction."""
        if durable:
            try:
                self._index.insert([p.message for p in durable])
            except (OSError, sqlite3.Error) as exc:
                for pending in durable:
                    pending.writer.remove()
                error: BaseException = exc
                failed.extend((p, error) for p in durable)
                durable = []
        if durable:
            self._batches += 1
            self._messages += len(durable)
            self._largest = max(self._largest, len(durable))
        self._log.debug(
            "queue.commit_batch",
            messages=len(durable),
            failed=len(failed),
            seconds=round(time.perf_counter() - started, 6),
        )
        for pending, reason in failed:
            self._log.error("queue.commit_failed", queue_id=pending.message.queue_id, error=str(reason))
        self._resolve(durable, failed)

    def _make_files_durable(self, batch: list[_Pending]) -> tuple[list[_Pending], list[_Failure]]:
        def one(pending: _Pending) -> BaseException | None:
            try:
                pending.writer.make_durable(self._spool.path(pending.message.queue_id))
            except OSError as exc:
                pending.writer.remove()
                return exc
            return None

        if len(batch) >= _PARALLEL_FROM and self._pool is not None:
            errors = list(self._pool.map(one, batch))
        else:
            errors = [one(pending) for pending in batch]
        durable = [p for p, error in zip(batch, errors, strict=True) if error is None]
        failed = [(p, error) for p, error in zip(batch, errors, strict=True) if error is not None]
        return durable, failed

    def _resolve(self, durable: Sequence[_Pending], failed: Sequence[_Failure]) -> None:
        loops = {p.loop for p in durable} | {p.loop for p, _ in failed}
        for loop in loops:
            ours = [p for p in durable if p.loop is loop]
            theirs = [(p, e) for p, e in failed if p.loop is loop]
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._settle, ours, theirs)

    def _settle(self, durable: Sequence[_Pending], failed: Sequence[_Failure]) -> None:
        """On the event loop: wake the sessions, then the scheduler."""
        for pending in durable:
            if not pending.future.done():
                pending.future.set_result(pending.message.queue_id)
        for pending, exc in failed:
            if not pending.future.done():
                error = exc if isinstance(exc, QueueError) else QueueError(f"commit failed: {exc}")
                error.__cause__ = None if error is exc else exc
                pending.future.set_exception(error)
        if durable:
            self._on_commit()
