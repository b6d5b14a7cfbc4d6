"""Reports that could not be queued are not lost: a bounce the queue refused stays in the report outbox and
the scheduler queues it later; a report left behind by a stopped (or crashed) process goes out at start."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

from postroom.config.schema import DeliverySettings, QueueSettings
from postroom.delivery import Bouncer, Scheduler
from postroom.mailbox import MaildirMessage, Maildirs
from postroom.observe.log import Logger
from postroom.queue import FailedMessage, Outcome, Queue

from .conftest import FakeClock, Records, put

SENDER = "alice@example.test"
BODY = b"Subject: doomed\r\nFrom: alice@example.test\r\n\r\nbody\r\n"
SETTINGS = DeliverySettings(poll_interval=0.05)


def _scheduler(queue: Queue, maildirs: Maildirs, clock: FakeClock, log: Logger) -> Scheduler:
    bouncer = Bouncer(
        queue=queue, hostname="mx.example.test", local_domains=["example.test"], clock=clock, log=log
    )
    return Scheduler(queue=queue, maildirs=maildirs, settings=SETTINGS, log=log, bouncer=bouncer)


async def _failed_report(queue: Queue) -> FailedMessage:
    """A message for another domain whose delivery failed for good: its report, recorded, not yet queued."""
    queue_id = await put(queue, BODY, "bob@far.test", sender=SENDER)
    (due,) = queue.claim_due(limit=10)
    (report,) = queue.record([Outcome(queue_id, due.idx, "permanent", "550 5.1.1 no", status="5.1.1")])
    return report


@contextlib.contextmanager
def spool_refused(queue: Queue) -> Iterator[None]:
    """No message can be committed: the spool folder is a plain file for a while (ENOTDIR, even for root)."""
    spool = queue.spool_path("0" * 16).parent
    aside = spool.with_name("spool.aside")
    spool.rename(aside)
    spool.write_bytes(b"")
    try:
        yield
    finally:
        spool.unlink()
        aside.rename(spool)


async def _wait_for_dsn(maildirs: Maildirs) -> list[MaildirMessage]:
    for _ in range(200):  # bounded: 10 s
        found = maildirs.for_address(SENDER).list()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise TimeoutError("no DSN in the sender's Maildir")


async def test_a_refused_bounce_stays_in_the_outbox_and_is_queued_later(
    queue: Queue, maildirs: Maildirs, clock: FakeClock, log: Logger, records: Records
) -> None:
    report = await _failed_report(queue)
    scheduler = _scheduler(queue, maildirs, clock, log)
    await scheduler.start()
    try:
        with spool_refused(queue):
            bouncer = Bouncer(
                queue=queue, hostname="mx.example.test", local_domains=["example.test"], clock=clock, log=log
            )
            await bouncer.bounce([report])
        (failed,) = records.events("delivery.bounce_failed")
        assert failed["report_id"] == report.report_id
        assert queue.pending_reports() == 1
        assert not records.events("delivery.bounced")
        clock.now += QueueSettings().claim_lease  # the lease of the failed attempt ends
        (dsn,) = await _wait_for_dsn(maildirs)
    finally:
        await scheduler.stop()
    assert queue.pending_reports() == 0
    assert len(records.events("delivery.bounced")) == 1
    text = maildirs.for_address(SENDER).read(dsn.name)
    assert b"Undelivered Mail Returned to Sender" in text
    assert b"Subject: doomed" in text  # the original headers, kept in the outbox


async def test_a_report_left_by_a_stopped_process_goes_out_at_start(
    tmp_path: Path, maildirs: Maildirs, clock: FakeClock, log: Logger, records: Records
) -> None:
    def open_queue() -> Queue:
        settings = QueueSettings(retry_schedule=(60.0,), max_lifetime=3600.0, inline_max=0)
        return Queue(
            settings=settings,
            queue_dir=tmp_path / "queue",
            database_path=tmp_path / "postroom.db",
            clock=clock,
            log=log,
        )

    first = open_queue()
    await first.start()
    await _failed_report(first)
    await first.stop()  # the report was never handed to a bouncer
    second = open_queue()
    await second.start()
    scheduler = _scheduler(second, maildirs, clock, log)
    await scheduler.start()
    try:
        await _wait_for_dsn(maildirs)  # the clock did not move: no lease to wait for
    finally:
        await scheduler.stop()
        await second.stop()
    assert len(records.events("delivery.bounced")) == 1
