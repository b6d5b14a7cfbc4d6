"""Fixtures every test folder may use: a fake clock, a logger that keeps its records, a loopback DNS
server that answers NXDOMAIN for anything a test did not add."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.observe.log import Logger
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
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server
