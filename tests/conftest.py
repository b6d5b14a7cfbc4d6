"""Fixtures every test folder may use: a fake clock and a logger that keeps its records."""

from __future__ import annotations

import pytest

from postroom.observe.log import Logger
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
