"""The report outbox: a report (bounce, delay warning, success notice) is stored in the transaction that
records its outcome, leaves the outbox in the transaction that queues its DSN, is handed out again after
its lease, and survives closing and reopening the database."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Envelope, FailedMessage, Outcome, Queue, Recipient

from .conftest import FakeClock, make_queue

HEADERS = b"Subject: report me\r\nFrom: a@example.test\r\n\r\n"
BODY = HEADERS + b"the body\r\n"
REMOTE = Recipient(address="Bob@Remote.test", mailbox="Bob@remote.test", transport="smtp")
LOCAL = Recipient(address="c@example.test", mailbox="c@example.test")


async def _put(queue: Queue, *recipients: Recipient, sender: str = "a@example.test", ret: str = "") -> str:
    writer = queue.open_spool()
    writer.write(BODY)
    return await queue.commit(writer, Envelope(sender=sender, recipients=recipients, ret=ret, envid="E1"))


def _fail(queue: Queue, queue_id: str) -> list[FailedMessage]:
    (due,) = [d for d in queue.claim_due(limit=10) if d.queue_id == queue_id]
    return queue.record(
        [Outcome(queue_id, due.idx, "permanent", "mx said no", status="5.1.1", diagnostic="550 5.1.1 no")]
    )


async def _queue_dsn(queue: Queue, report: FailedMessage) -> str:
    """What the Bouncer does, without the report text: a message from <> committed with the report's id."""
    writer = queue.open_spool()
    writer.write(b"Subject: a report\r\n\r\nreport\r\n")
    envelope = Envelope(sender="", recipients=(Recipient(report.sender, report.sender),))
    return await queue.commit(writer, envelope, report_id=report.report_id)


async def test_the_report_is_in_the_outbox_as_soon_as_the_outcome_is_recorded(queue: Queue) -> None:
    queue_id = await _put(queue, REMOTE)
    (report,) = _fail(queue, queue_id)
    assert report.report_id is not None
    assert queue.pending_reports() == 1
    # the message left the queue in that same transaction, and its spool file after it; the report stays
    assert queue.message_count() == 0
    assert not queue.spool_path(queue_id).exists()
    assert report.headers == HEADERS  # read from the spool file before it went
    assert (report.sender, report.envid, report.recipients[0].status) == ("a@example.test", "E1", "5.1.1")


async def test_committing_the_dsn_takes_the_report_out_of_the_outbox(queue: Queue) -> None:
    queue_id = await _put(queue, REMOTE)
    (report,) = _fail(queue, queue_id)
    await _queue_dsn(queue, report)
    assert queue.pending_reports() == 0
    assert queue.message_count() == 1  # the DSN itself


async def test_a_report_not_queued_comes_back_after_the_lease_and_only_then(
    queue: Queue, clock: FakeClock, settings: QueueSettings
) -> None:
    queue_id = await _put(queue, REMOTE)
    (report,) = _fail(queue, queue_id)
    assert queue.claim_reports(limit=10) == []  # the recording process is bouncing it right now
    clock.now += settings.claim_lease
    assert queue.claim_reports(limit=10) == [report]
    assert queue.claim_reports(limit=10) == []  # leased again to whoever took it
    clock.now += settings.claim_lease
    (again,) = queue.claim_reports(limit=10)
    await _queue_dsn(queue, again)
    clock.now += settings.claim_lease
    assert queue.claim_reports(limit=10) == []
    assert queue.pending_reports() == 0


async def test_the_outbox_survives_reopening_and_a_lone_start_hands_it_out_at_once(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    first = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await first.start()
    queue_id = await _put(first, REMOTE, ret="FULL")
    (report,) = _fail(first, queue_id)
    await first.stop()  # as good as a crash here: the report was never queued as a DSN
    second = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await second.start()
    try:
        assert second.pending_reports() == 1
        (again,) = second.claim_reports(limit=10)  # no lease wait: nobody else runs on this queue
        assert again == report
        assert again.original == BODY  # RET=FULL: the whole message, read before its file went
        assert again.headers == HEADERS
    finally:
        await second.stop()


async def test_a_second_process_leaves_the_leases_of_a_running_one_alone(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    running = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await running.start()
    try:
        queue_id = await _put(running, REMOTE)
        _fail(running, queue_id)
        beside = make_queue(tmp_path, settings=settings, clock=clock, log=log)
        await beside.start()  # e.g. `postroom queue bounce` beside the server
        try:
            assert beside.claim_reports(limit=10) == []
        finally:
            await beside.stop()
    finally:
        await running.stop()


async def test_success_notices_go_through_the_outbox_too(queue: Queue) -> None:
    writer = queue.open_spool()
    writer.write(BODY)
    notify = dataclasses.replace(LOCAL, notify="SUCCESS")
    queue_id = await queue.commit(writer, Envelope(sender="a@example.test", recipients=(notify,)))
    (due,) = queue.claim_due(limit=10)
    (notice,) = queue.record([Outcome(queue_id, due.idx, "delivered", "ok")])
    assert notice.recipients[0].action == "delivered"
    assert notice.original is None  # only a failure returns the message
    assert queue.pending_reports() == 1


async def test_no_report_and_no_row_for_the_null_sender(queue: Queue) -> None:
    queue_id = await _put(queue, REMOTE, sender="")
    assert _fail(queue, queue_id) == []
    assert queue.pending_reports() == 0


async def test_several_reports_of_one_message_each_get_their_own_row(
    queue: Queue, clock: FakeClock, settings: QueueSettings
) -> None:
    queue_id = await _put(queue, REMOTE, dataclasses.replace(LOCAL, notify="SUCCESS"))
    remote, local = queue.claim_due(limit=10)
    (notice,) = queue.record([Outcome(queue_id, local.idx, "delivered", "ok")])
    (failure,) = queue.record([Outcome(queue_id, remote.idx, "permanent", "no", status="5.1.1")])
    assert notice.report_id != failure.report_id
    await _queue_dsn(queue, failure)
    clock.now += settings.claim_lease
    assert queue.claim_reports(limit=10) == [notice]
