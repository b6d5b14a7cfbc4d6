"""LocalCourier: one recipient into its Maildir, trace headers first."""

from __future__ import annotations

from postroom.delivery.local import LocalCourier, trace_headers
from postroom.mailbox import Maildirs
from postroom.queue import Queue

from .conftest import put


def test_trace_headers_use_angle_brackets_and_null_sender() -> None:
    assert trace_headers(sender="a@b.test", mailbox="c@d.test") == (
        b"Return-Path: <a@b.test>\r\nDelivered-To: c@d.test\r\n"
    )
    assert trace_headers(sender="", mailbox="c@d.test").startswith(b"Return-Path: <>\r\n")
    assert b"\n" not in trace_headers(sender="a\r\nX: y@b", mailbox="c").split(b"\r\n")[0]


async def test_delivers_into_the_mailbox_with_trace_headers(queue: Queue, maildirs: Maildirs) -> None:
    queue_id = await put(queue, b"Subject: hi\r\n\r\nbody\r\n", "Bob@Example.test", sender="")
    (due,) = queue.claim_due(limit=1)
    outcome = LocalCourier(maildirs=maildirs, spool_path=queue.spool_path).deliver(due)
    assert (outcome.queue_id, outcome.result) == (queue_id, "delivered")
    box = maildirs.for_address("bob@example.test")
    (message,) = box.list()
    assert message.name == outcome.detail
    assert box.read(message.name) == (
        b"Return-Path: <>\nDelivered-To: bob@example.test\nSubject: hi\n\nbody\n"
    )


async def test_a_missing_spool_file_is_permanent(queue: Queue, maildirs: Maildirs) -> None:
    queue_id = await put(queue, b"x\r\n", "bob@example.test")
    queue.spool_path(queue_id).unlink()
    (due,) = queue.claim_due(limit=1)
    outcome = LocalCourier(maildirs=maildirs, spool_path=queue.spool_path).deliver(due)
    assert outcome.result == "permanent"


async def test_a_file_where_the_mailbox_should_be_is_temporary(queue: Queue, maildirs: Maildirs) -> None:
    await put(queue, b"x\r\n", "bob@example.test")
    blocker = maildirs.path_for("bob@example.test")
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"not a directory")
    (due,) = queue.claim_due(limit=1)
    outcome = LocalCourier(maildirs=maildirs, spool_path=queue.spool_path).deliver(due)
    assert outcome.result == "temporary"
    assert "ENOTDIR" in outcome.detail or "EEXIST" in outcome.detail
