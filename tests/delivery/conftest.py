"""Fixtures for delivery tests: a fake clock, a logger that keeps records, a running Queue, Maildirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers.fakes import FakeClock, Records

from postroom.config.schema import QueueSettings
from postroom.mailbox import Maildirs
from postroom.observe.log import Logger
from postroom.queue import Envelope, Queue, Recipient

__all__ = ["FakeClock", "Records", "put"]


@pytest.fixture
async def queue(tmp_path: Path, clock: FakeClock, log: Logger) -> AsyncIterator[Queue]:
    q = Queue(
        settings=QueueSettings(retry_schedule=(60.0,), max_lifetime=3600.0, inline_max=0),
        queue_dir=tmp_path / "queue",
        database_path=tmp_path / "postroom.db",
        clock=clock,
        log=log,
    )
    await q.start()
    yield q
    await q.stop()


@pytest.fixture
def maildirs(tmp_path: Path) -> Maildirs:
    return Maildirs(tmp_path / "mailboxes", hostname="mx.example.test")


async def put(queue: Queue, body: bytes, *mailboxes: str, sender: str = "s@example.test") -> str:
    writer = queue.open_spool()
    writer.write(body)
    recipients = tuple(Recipient(address=m, mailbox=m.lower()) for m in mailboxes)
    return await queue.commit(writer, Envelope(sender=sender, recipients=recipients))
