"""The delivery loop: wake on new work (or every poll_interval), claim due recipients in bulk, deliver them
``concurrency`` at a time in worker threads, record outcomes in batches.

Theory of operation: one asyncio task runs rounds. A round clears the queue's work event, claims up to
``claim_limit`` recipients (one transaction; their next attempt already moved a lease ahead), lets the
router split them, submits the local ones to a pool of ``concurrency`` threads and the remote groups (one
message, one domain) as tasks on the loop, and records outcomes every ``record_batch`` completions (one
transaction each); recipients given up on go to the bouncer. At the first round and then at most once per
poll interval it also asks the queue's report outbox for reports whose bounce failed or was cut short by a
crash (the queue re-leases them) and hands them to the bouncer again.
Database calls run on one dedicated thread so they never wait behind deliveries. When a
round claims nothing the task sleeps until the event or the poll interval. ``stop`` lets running deliveries
finish (up to a bound), records them, and gives back the claimed recipients that never started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from postroom.config.schema import DeliverySettings
from postroom.delivery.bounce import Bouncer
from postroom.delivery.courier import Courier
from postroom.delivery.local import LocalCourier
from postroom.delivery.outcome import failed
from postroom.delivery.router import Router
from postroom.mailbox import Maildirs
from postroom.observe.log import Logger
from postroom.queue import DueRecipient, Outcome, Queue

__all__ = ["Scheduler"]

_T = TypeVar("_T")
Chunk = tuple[DueRecipient, ...]
_CLAIM_PER_WORKER = 32
_MAX_CLAIM = 256
_RECORD_BATCH = 64
_MAX_CHUNK = 16  # recipients handed to one worker at once (they share the Maildir folder fsync)
# ... and at least this many, while there are: a small round in one or two chunks, not one thread and one
# fsync of new/ per recipient (measured: 3-18 % less CPU per message, docs/performance.md)
_MIN_CHUNK = 4
_REPORT_BATCH = 64  # reports taken from the outbox at once ...
_REPORT_BATCHES = 32  # ... and batches per look (the rest at the next look)


class Scheduler:
    """Runs deliveries of the queue's due recipients until stopped."""

    def __init__(
        self,
        *,
        queue: Queue,
        maildirs: Maildirs,
        settings: DeliverySettings,
        log: Logger,
        courier: Courier | None = None,
        router: Router | None = None,
        bouncer: Bouncer | None = None,
    ) -> None:
        self._queue = queue
        self._settings = settings
        self._log = log
        self._courier = courier or LocalCourier(maildirs=maildirs, spool_path=queue.spool_path)
        self._router = router  # None: every recipient is local (the queue's transport is not looked at)
        self._bouncer = bouncer
        self._concurrency = max(1, settings.concurrency)
        self._claim_limit = min(self._concurrency * _CLAIM_PER_WORKER, _MAX_CLAIM)
        self._task: asyncio.Task[None] | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._database: ThreadPoolExecutor | None = None
        self._stopping = False
        # asyncio future -> (its worker-thread future, or None for a remote task on the loop; the chunk)
        self._in_flight: dict[asyncio.Future[list[Outcome]], tuple[Future[list[Outcome]] | None, Chunk]] = {}
        self.recorded = 0  # outcomes recorded since start, whatever the result (metrics, tests)
        self._reports_due = 0.0  # loop time of the next look into the report outbox

    def update(self, settings: DeliverySettings) -> None:
        """New settings (SIGHUP, on the loop): poll_interval from the next wait, concurrency from the next
        round (a new pool of worker threads; the old one's running deliveries finish in this round)."""
        self._settings = settings
        concurrency = max(1, settings.concurrency)
        if concurrency != self._concurrency:
            self._concurrency = concurrency
            self._claim_limit = min(concurrency * _CLAIM_PER_WORKER, _MAX_CLAIM)
            if self._workers is not None:
                old, self._workers = self._workers, self._pool()
                old.shutdown(wait=False)
        self._queue.wait_for_work().set()  # a round now: a shorter poll interval need not wait for the old

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self._concurrency, thread_name_prefix="postroom-deliver")

    async def start(self) -> None:
        self._stopping = False
        self._reports_due = 0.0  # the first round looks: reports a crash left behind go out at start
        self._workers = self._pool()
        self._database = ThreadPoolExecutor(1, thread_name_prefix="postroom-delivery-db")
        self._task = asyncio.create_task(self._run(), name="delivery-scheduler")

    async def stop(self, *, grace: float = 30.0) -> None:
        """Stops claiming; waits up to ``grace`` seconds for running deliveries. Unstarted claims go back;
        deliveries still running after the bound keep their lease and are retried after it."""
        self._stopping = True
        unstarted = [
            r
            for future, chunk in self._in_flight.values()
            if future is not None and future.cancel()
            for r in chunk
        ]
        self._queue.wait_for_work().set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace)
            except TimeoutError:
                self._log.warning("delivery.stop_timeout", seconds=grace)
            self._task = None
        if unstarted:
            await self._in_database(partial(self._queue.release, unstarted))
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)
            self._workers = None
        if self._database is not None:
            await asyncio.to_thread(self._database.shutdown, wait=True)
            self._database = None

    async def _run(self) -> None:
        work = self._queue.wait_for_work()
        while not self._stopping:
            work.clear()
            try:
                await self._retry_reports()
                due = await self._in_database(self._claim)
                if self._stopping:
                    await self._in_database(partial(self._queue.release, due))
                    break
                if due:
                    await self._deliver(due)
                    if self._settings.gather > 0 and not self._stopping:  # acceptance first (gather)
                        await asyncio.sleep(self._settings.gather)
                    continue
            except Exception as exc:  # the database failed us: log, wait, try again
                self._log.failure("delivery.scheduler_error", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(work.wait(), self._settings.poll_interval)

    async def _retry_reports(self) -> None:
        """Bounces the outbox's reports whose lease ended (at most once per poll interval)."""
        loop = asyncio.get_running_loop()
        if self._bouncer is None or loop.time() < self._reports_due:
            return
        self._reports_due = loop.time() + self._settings.poll_interval
        claim = partial(self._queue.claim_reports, limit=_REPORT_BATCH)
        for _ in range(_REPORT_BATCHES):
            reports = await self._in_database(claim)
            if not reports:
                return
            self._log.warning("delivery.reports_retried", reports=len(reports))
            await self._bouncer.bounce(reports)
            if len(reports) < _REPORT_BATCH or self._stopping:
                return

    def _claim(self) -> list[DueRecipient]:
        return self._queue.claim_due(limit=self._claim_limit)

    async def _deliver(self, due: Sequence[DueRecipient]) -> None:
        assert self._workers is not None
        local, remote = self._router.split(due) if self._router is not None else (list(due), [])
        size = max(_MIN_CHUNK, min(_MAX_CHUNK, -(-len(local) // self._concurrency)))
        for start in range(0, len(local), size):
            chunk = tuple(local[start : start + size])
            submitted = self._workers.submit(self._deliver_chunk, chunk)
            self._in_flight[asyncio.wrap_future(submitted)] = (submitted, chunk)
        for group in remote:
            task = asyncio.ensure_future(self._deliver_remote(tuple(group)))
            self._in_flight[task] = (None, tuple(group))
        waiting: set[asyncio.Future[list[Outcome]]] = set(self._in_flight)
        outcomes: list[Outcome] = []
        try:
            while waiting:
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    if not future.cancelled():  # cancelled: see stop()
                        outcomes.extend(future.result())
                if len(outcomes) >= _RECORD_BATCH or not waiting:
                    batch, outcomes = outcomes, []
                    await self._record(batch)
        finally:
            for pending, (thread_future, _chunk) in self._in_flight.items():
                if thread_future is None:  # a remote task cut short keeps its lease: retried after it
                    pending.cancel()
            self._in_flight.clear()

    async def _record(self, outcomes: list[Outcome]) -> None:
        if outcomes:
            given_up = await self._in_database(partial(self._queue.record, outcomes))
            self.recorded += len(outcomes)
            if given_up and self._bouncer is not None:
                await self._bouncer.bounce(given_up)

    async def _deliver_remote(self, group: Chunk) -> list[Outcome]:
        assert self._router is not None
        try:
            return await self._router.deliver(group)
        except Exception as exc:  # a courier bug: keep the messages, say so loudly
            self._log.failure("delivery.courier_error", exc, queue_id=group[0].queue_id)
            return [failed(recipient, exc) for recipient in group]

    def _deliver_chunk(self, chunk: Chunk) -> list[Outcome]:
        try:
            return self._courier.deliver_batch(chunk)
        except Exception as exc:  # a courier bug: keep the messages, say so loudly
            self._log.failure("delivery.courier_error", exc, queue_id=chunk[0].queue_id)
            return [failed(recipient, exc) for recipient in chunk]

    async def _in_database(self, call: Callable[[], _T]) -> _T:
        assert self._database is not None
        return await asyncio.get_running_loop().run_in_executor(self._database, call)
