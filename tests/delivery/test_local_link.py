"""Local delivery of spool files in a mailbox's form: a hard link, the same bytes as a copy, crash-safe."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from postroom.config.schema import QueueSettings
from postroom.delivery.local import LocalCourier
from postroom.mailbox import Maildirs
from postroom.observe.log import Logger
from postroom.policy.sender_auth import JUNK_MARKER
from postroom.queue import Envelope, Queue, Recipient

from .conftest import FakeClock

BODY = b"Received: from client\r\nSubject: big\r\n\r\n" + b"a line of the body, long enough\r\n" * 4000
SENDER = "s@example.test"


async def put(queue: Queue, body: bytes, *recipients: Recipient, prepend: bytes = b"") -> str:
    """What a session does: open the spool with the envelope so far, stream the body, commit."""
    writer = queue.open_spool(sender=SENDER, recipients=recipients)
    for start in range(0, len(body), 8192):
        writer.write(body[start : start + 8192])
    if prepend:
        writer.prepend(prepend)
    return await queue.commit(writer, Envelope(sender=SENDER, recipients=recipients))


def local(mailbox: str) -> Recipient:
    return Recipient(address=mailbox, mailbox=mailbox)


def courier(queue: Queue, maildirs: Maildirs) -> LocalCourier:
    return LocalCourier(maildirs=maildirs, spool_path=queue.spool_path)


def only_file(folder: Path) -> Path:
    (path,) = (folder / "new").iterdir()
    return path


async def test_a_linked_delivery_gives_the_same_bytes_as_a_copied_one(
    queue: Queue, maildirs: Maildirs
) -> None:
    linked_id = await put(queue, BODY, local("bob@example.test"))
    assert queue.spool_path(linked_id).read_bytes().startswith(b"Return-Path: <s@example.test>\n")
    (due,) = queue.claim_due(limit=1)
    outcome = courier(queue, maildirs).deliver(due)
    assert outcome.result == "delivered"
    linked = only_file(maildirs.path_for("bob@example.test"))
    assert linked.name == outcome.detail
    assert linked.stat().st_ino == queue.spool_path(linked_id).stat().st_ino  # a link, not a copy
    assert linked.stat().st_nlink == 2
    # the same message the old way: spooled as received, copied with the trace headers
    writer = queue.open_spool()
    writer.write(BODY)
    await queue.commit(writer, Envelope(sender=SENDER, recipients=(local("carol@example.test"),)))
    (copied_due,) = queue.claim_due(limit=1)
    courier(queue, maildirs).deliver(copied_due)
    copied = only_file(maildirs.path_for("carol@example.test"))
    expected = copied.read_bytes().replace(b"carol@example.test", b"bob@example.test")
    assert linked.read_bytes() == expected
    assert linked.name.endswith(f",S={len(expected)}")
    assert linked.stat().st_mode & 0o777 == 0o600
    queue.record([outcome])  # the spool name goes; the mailbox's name stays
    assert not queue.spool_path(linked_id).exists()
    assert linked.read_bytes() == expected
    assert linked.stat().st_nlink == 1


async def test_several_recipients_and_remote_ones_keep_the_wire_form(
    queue: Queue, maildirs: Maildirs
) -> None:
    both = await put(queue, BODY, local("bob@example.test"), local("carol@example.test"))
    remote = await put(queue, BODY, Recipient(address="x@far.test", mailbox="x@far.test", transport="smtp"))
    assert queue.spool_path(both).read_bytes() == BODY
    assert queue.spool_path(remote).read_bytes() == BODY
    due = [d for d in queue.claim_due(limit=10) if d.queue_id == both]
    outcomes = courier(queue, maildirs).deliver_batch(due)
    assert [o.result for o in outcomes] == ["delivered", "delivered"]
    for mailbox in ("bob@example.test", "carol@example.test"):
        data = only_file(maildirs.path_for(mailbox)).read_bytes()
        head = f"Return-Path: <{SENDER}>\nDelivered-To: {mailbox}\n".encode()
        assert data == head + BODY.replace(b"\r\n", b"\n")
        assert only_file(maildirs.path_for(mailbox)).stat().st_nlink == 1


async def test_a_quarantined_message_is_copied_into_junk_without_the_marker(
    queue: Queue, maildirs: Maildirs
) -> None:
    header = b"Authentication-Results: mx; dmarc=fail\r\n"
    await put(queue, BODY, local("bob@example.test"), prepend=JUNK_MARKER + header)
    (due,) = queue.claim_due(limit=1)
    assert courier(queue, maildirs).deliver(due).result == "delivered"
    junk = only_file(maildirs.path_for("bob@example.test") / ".Junk")
    head = b"Return-Path: <s@example.test>\nDelivered-To: bob@example.test\n"
    assert junk.read_bytes() == head + (header + BODY).replace(b"\r\n", b"\n")
    assert junk.stat().st_nlink == 1
    assert list((maildirs.path_for("bob@example.test") / "new").iterdir()) == []


def _other_file_system(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system on this machine to link across")
    return shm


async def test_another_file_system_falls_back_to_a_copy(queue: Queue, tmp_path: Path) -> None:
    shm = _other_file_system(tmp_path)
    with tempfile.TemporaryDirectory(dir=shm) as other:
        maildirs = Maildirs(Path(other), hostname="mx.example.test")
        await put(queue, BODY, local("bob@example.test"))
        (due,) = queue.claim_due(limit=1)
        assert courier(queue, maildirs).deliver(due).result == "delivered"  # os.link said EXDEV
        data = only_file(maildirs.path_for("bob@example.test")).read_bytes()
        assert data == b"Return-Path: <s@example.test>\nDelivered-To: bob@example.test\n" + BODY.replace(
            b"\r\n", b"\n"
        )


async def test_a_crash_between_link_and_record_delivers_again_and_loses_nothing(
    tmp_path: Path, queue: Queue, maildirs: Maildirs, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY, local("bob@example.test"))
    (due,) = queue.claim_due(limit=1)
    courier(queue, maildirs).deliver(due)  # linked and new/ fsynced; then the process dies unrecorded
    first = only_file(maildirs.path_for("bob@example.test"))
    await queue.stop()
    again = Queue(
        settings=QueueSettings(retry_schedule=(60.0,), max_lifetime=3600.0, inline_max=0),
        queue_dir=tmp_path / "queue",
        database_path=tmp_path / "postroom.db",
        clock=clock,
        log=Logger(stream=io.StringIO()),
    )
    await again.start()  # recovery keeps the spool file (its row is there) and never the mailbox's name
    try:
        assert first.read_bytes().startswith(b"Return-Path: <s@example.test>\n")
        clock.now += 601  # the claim's lease runs out: due again
        (retry,) = again.claim_due(limit=1)
        assert retry.queue_id == queue_id
        outcome = courier(again, maildirs).deliver(retry)
        again.record([outcome])
        files = sorted((maildirs.path_for("bob@example.test") / "new").iterdir())
        assert len(files) == 2  # at worst twice, never zero times
        assert files[0].read_bytes() == files[1].read_bytes()
        assert again.message_count() == 0
    finally:
        await again.stop()
