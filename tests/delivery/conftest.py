"""Fixtures for delivery tests: a fake clock, a logger that keeps records, a running Queue, Maildirs."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postroom.config.schema import QueueSettings
from postroom.mailbox import Maildirs
from postroom.observe.log import Logger
from postroom.queue import Envelope, Queue, Recipient


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Records(list[dict[str, Any]]):
    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self if record["event"] == name]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def log(records: Records) -> Logger:
    logger = Logger(stream=io.StringIO(), level="debug")
    logger.add_listener(records.append)
    return logger


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
