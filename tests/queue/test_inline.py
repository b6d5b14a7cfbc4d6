"""Small messages live in the index: committed with their rows, no spool file; big ones spill to a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Outcome, Queue

from .conftest import FakeClock, Records, make_queue, put

INLINE = QueueSettings(retry_schedule=(60.0,), max_lifetime=3600.0, inline_max=1024)


@pytest.fixture
def settings() -> QueueSettings:
    return INLINE


def _files(tmp_path: Path) -> list[Path]:
    return [p for sub in ("spool", "incoming") for p in (tmp_path / "queue" / sub).iterdir()]


async def test_small_message_is_committed_without_a_file_and_survives_a_restart(
    queue: Queue, tmp_path: Path, clock: FakeClock, log: Logger
) -> None:
    body = b"Subject: small\r\n\r\n" + b"x" * 900 + b"\r\n"
    queue_id = await put(queue, body)
    assert _files(tmp_path) == []
    await queue.stop()
    again = make_queue(tmp_path, settings=INLINE, clock=clock, log=log)
    await again.start()
    try:
        (due,) = again.claim_due(limit=10)
        assert (due.queue_id, due.body) == (queue_id, body)
    finally:
        await again.stop()


async def test_message_over_inline_max_spills_to_a_spool_file(queue: Queue, tmp_path: Path) -> None:
    writer = queue.open_spool()
    writer.write(b"y" * 1000)
    assert _files(tmp_path) == []  # still in memory
    writer.write(b"z" * 100)  # past inline_max: to disk, and from now on streamed there
    assert (tmp_path / "queue" / "incoming" / writer.queue_id).exists()
    writer.write(b"w" * 5000)
    assert writer.size == 6100
    writer.abort()
    assert _files(tmp_path) == []


async def test_inline_and_spooled_messages_commit_in_one_batch_and_leave_cleanly(
    queue: Queue, tmp_path: Path, records: Records
) -> None:
    small = await put(queue, b"small\r\n")
    big = await put(queue, b"b" * 4096)
    assert [p.name for p in _files(tmp_path)] == [big]
    due = {d.queue_id: d for d in queue.claim_due(limit=10)}
    assert due[small].body == b"small\r\n"
    assert due[big].body is None
    assert queue.spool_path(big).read_bytes() == b"b" * 4096
    queue.record([Outcome(small, 0, "delivered"), Outcome(big, 0, "delivered")])
    assert queue.message_count() == 0
    assert _files(tmp_path) == []
    assert {r["queue_id"] for r in records.events("message.removed")} == {small, big}
