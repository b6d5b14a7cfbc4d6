"""Remote delivery's needs of the queue: the transport survives the index, and ``record`` hands back the
recipients given up on (with the original headers) for the bounce, never for the null sender."""

from __future__ import annotations

from pathlib import Path

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Envelope, Outcome, Queue, Recipient

from .conftest import FakeClock, make_queue

BODY = b"Subject: hi\r\nFrom: a@example.test\r\n\r\nbody\r\n"


async def _put(queue: Queue, *recipients: Recipient, sender: str = "a@example.test") -> str:
    writer = queue.open_spool()
    writer.write(BODY)
    return await queue.commit(writer, Envelope(sender=sender, recipients=recipients))


REMOTE = Recipient(address="Bob@Remote.test", mailbox="Bob@remote.test", transport="smtp")
LOCAL = Recipient(address="c@example.test", mailbox="c@example.test")


async def test_transport_is_kept_and_claimed(queue: Queue) -> None:
    await _put(queue, REMOTE, LOCAL)
    remote, local = queue.claim_due(limit=10)
    assert (remote.transport, remote.mailbox, remote.domain) == ("smtp", "Bob@remote.test", "remote.test")
    assert local.transport == "local"


async def test_permanent_failures_come_back_with_the_original_headers(queue: Queue) -> None:
    queue_id = await _put(queue, REMOTE, LOCAL)
    remote, local = queue.claim_due(limit=10)
    failed = queue.record(
        [
            Outcome(
                queue_id,
                remote.idx,
                "permanent",
                "mx said: 550 5.1.1 no",
                status="5.1.1",
                remote_mta="mx.remote.test",
                diagnostic="550 5.1.1 no",
            ),
            Outcome(queue_id, local.idx, "delivered"),
        ]
    )
    (message,) = failed
    assert (message.queue_id, message.sender) == (queue_id, "a@example.test")
    assert message.headers == b"Subject: hi\r\nFrom: a@example.test\r\n\r\n"
    (recipient,) = message.recipients
    assert (recipient.address, recipient.status, recipient.remote_mta) == (
        "Bob@Remote.test",
        "5.1.1",
        "mx.remote.test",
    )
    assert not recipient.expired
    assert queue.message_count() == 0  # and the spool file is gone after the headers were read
    assert not queue.spool_path(queue_id).exists()


async def test_expiry_is_a_failure_with_a_4_status(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue = make_queue(
        tmp_path, settings=QueueSettings(inline_max=1024, max_lifetime=10.0), clock=clock, log=log
    )
    await queue.start()
    try:
        queue_id = await _put(queue, REMOTE)
        clock.now += 10
        (due,) = queue.claim_due(limit=1)
        (message,) = queue.record(
            [Outcome(queue_id, due.idx, "temporary", "connection refused", status="4.4.1")]
        )
    finally:
        await queue.stop()
    assert message.headers.startswith(b"Subject: hi")  # from the inline body
    assert message.recipients[0].expired
    assert message.recipients[0].status == "4.4.1"
    assert "expired" in message.recipients[0].detail


async def test_temporary_failures_and_null_sender_failures_are_not_returned(queue: Queue) -> None:
    first = await _put(queue, REMOTE)
    bounce = await _put(queue, REMOTE, sender="")
    one, two = queue.claim_due(limit=10)
    assert queue.record([Outcome(first, one.idx, "temporary", "later")]) == []
    assert queue.record([Outcome(bounce, two.idx, "permanent", "no")]) == []
    assert queue.message_count() == 1
