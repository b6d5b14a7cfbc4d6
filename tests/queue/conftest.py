"""Fixtures for queue tests: a fake clock, a logger that keeps its records, a running Queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers.fakes import FakeClock, Records

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Envelope, Queue, Recipient

__all__ = ["FakeClock", "Records", "put"]


@pytest.fixture
def settings() -> QueueSettings:
    # inline_max=0: every body in a spool file (these tests look at the files); test_inline.py covers the rest
    return QueueSettings(retry_schedule=(60.0, 300.0), max_lifetime=3600.0, claim_lease=600.0, inline_max=0)


def make_queue(tmp_path: Path, *, settings: QueueSettings, clock: FakeClock, log: Logger) -> Queue:
    return Queue(
        settings=settings,
        queue_dir=tmp_path / "queue",
        database_path=tmp_path / "postroom.db",
        clock=clock,
        log=log,
    )


@pytest.fixture
async def queue(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> AsyncIterator[Queue]:
    q = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await q.start()
    yield q
    await q.stop()


def envelope(*mailboxes: str, sender: str = "sender@example.test") -> Envelope:
    return Envelope(
        sender=sender,
        recipients=tuple(
            Recipient(address=m, mailbox=m.lower()) for m in mailboxes or ("rcpt@example.test",)
        ),
        client_ip="192.0.2.1",
        helo="client.example.test",
    )


async def put(queue: Queue, body: bytes = b"Subject: hi\r\n\r\nhello\r\n", *mailboxes: str) -> str:
    writer = queue.open_spool()
    writer.write(body)
    return await queue.commit(writer, envelope(*mailboxes))
