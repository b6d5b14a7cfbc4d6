"""Test doubles that are values, not mocks: a clock that moves when told, a list of log records."""

from __future__ import annotations

import io
from typing import Any

from postroom.observe.log import Logger


class FakeClock:
    """A clock callable that only moves when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Records(list[dict[str, Any]]):
    """Every log record, in order."""

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self if record["event"] == name]


def recording_logger(records: Records) -> Logger:
    """A debug-level Logger that writes nowhere and hands every record to ``records``."""
    logger = Logger(stream=io.StringIO(), level="debug")
    logger.add_listener(records.append)
    return logger
