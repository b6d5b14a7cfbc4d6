"""The session's timeouts on a real event loop with short limits: the command deadline, the data inactivity
limit, no timeout while the session waits, and cancel (server/deadlines.py)."""

from __future__ import annotations

import asyncio

from postroom.config.schema import SmtpSettings
from postroom.server.deadlines import Deadlines
from postroom.smtp import replies
from postroom.smtp.types import Reply

SHORT = SmtpSettings(command_timeout=0.05, data_timeout=0.05)


class Expiries:
    def __init__(self) -> None:
        self.seen: list[tuple[Reply, str]] = []
        self.event = asyncio.Event()

    def __call__(self, reply: Reply, reason: str) -> None:
        self.seen.append((reply, reason))
        self.event.set()


def _deadlines(expiries: Expiries, busy: list[bool] | None = None) -> Deadlines:
    flag = busy if busy is not None else [False]
    return Deadlines(loop=asyncio.get_running_loop(), settings=SHORT, busy=lambda: flag[0], expire=expiries)


async def test_command_deadline_expires_with_421_4_4_2() -> None:
    expiries = Expiries()
    _deadlines(expiries).arm(receiving=False)
    await asyncio.wait_for(expiries.event.wait(), timeout=5)
    assert expiries.seen == [(replies.COMMAND_TIMEOUT, "command timeout")]


async def test_data_inactivity_expires_and_activity_postpones_it() -> None:
    expiries = Expiries()
    deadlines = _deadlines(expiries)
    deadlines.touch()
    deadlines.arm(receiving=True)
    await asyncio.wait_for(expiries.event.wait(), timeout=5)
    assert expiries.seen == [(replies.DATA_TIMEOUT, "data timeout")]


async def test_no_timeout_while_busy_and_none_after_cancel() -> None:
    expiries = Expiries()
    busy = [True]
    deadlines = _deadlines(expiries, busy)
    deadlines.arm(receiving=False)
    await asyncio.sleep(0.2)  # the deadline passed while waiting on the queue: no timeout
    assert expiries.seen == []
    busy[0] = False
    deadlines.arm(receiving=False)
    deadlines.cancel()
    await asyncio.sleep(0.2)
    assert expiries.seen == []
