"""Fixtures every test folder may use: a fake clock, a logger that keeps its records, a loopback DNS
server that answers NXDOMAIN for anything a test did not add."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.observe.log import Logger
from postroom.policy.limitstore import LimitStore
from postroom.store import open_database
from tests.helpers.dns import DnsServer
from tests.helpers.fakes import FakeClock, Records, recording_logger


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def log(records: Records) -> Logger:
    return recording_logger(records)


@pytest.fixture
def limit_store(tmp_path: Path) -> Iterator[LimitStore]:
    """Rate-limit and greylist state in a real SQLite database (two connections, as app.py opens them)."""
    writer = open_database(tmp_path / "postroom.db", durable=False)
    reader = open_database(tmp_path / "postroom.db", durable=False)
    try:
        yield LimitStore(writer=writer, reader=reader)
    finally:
        writer.close()
        reader.close()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server
