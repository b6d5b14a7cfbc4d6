"""Connection reuse: idle outbound SMTP sessions kept for the next message to the same host.

Theory of operation: after a transaction, ``RemoteCourier`` gives its session back with ``give``; it is
kept (keyed by address, port, MX host name and whether TLS was required) while it has carried fewer than
``max_messages`` messages, for at most ``idle`` seconds, and closed with QUIT after that. ``take`` hands
a kept session out again; the caller says RSET on it (``SmtpSession.reset``) before its MAIL and opens a
new connection when that fails (the server may have hung up meanwhile). At most ``max_idle`` sessions are
kept (the oldest is closed first), so idle ones never hold more than the global connection limit allows.
It connects nothing itself and decides nothing about delivery.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from postroom.delivery.smtp_session import SmtpSession

__all__ = ["ConnectionPool", "PoolKey"]

PoolKey = tuple[str, int, str, bool]  # address, port, MX host name, TLS required


class ConnectionPool:
    """Idle sessions by key, each with the timer that closes it. Runs on the event loop."""

    def __init__(self, *, max_messages: int, idle: float, max_idle: int) -> None:
        self._max_messages = max_messages
        self._idle = idle
        self._max_idle = max(1, max_idle)
        self._kept: OrderedDict[tuple[PoolKey, int], tuple[SmtpSession, asyncio.TimerHandle]] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def take(self, key: PoolKey) -> SmtpSession | None:
        """A kept session for ``key`` (the most recently kept), or None."""
        for entry in reversed(self._kept):
            if entry[0] == key:
                session, timer = self._kept.pop(entry)
                timer.cancel()
                return session
        return None

    def give(self, key: PoolKey, session: SmtpSession) -> None:
        """Keep ``session`` for reuse, or close it when it has done its share or cannot take more."""
        conn = session.conn
        reusable = not conn.closed and not conn.awaiting_replies and self._idle > 0
        if not reusable or session.messages >= self._max_messages:
            self._close(session)
            return
        while len(self._kept) >= self._max_idle:
            _entry, (oldest, timer) = self._kept.popitem(last=False)
            timer.cancel()
            self._close(oldest)
        entry = (key, id(session))
        timer = asyncio.get_running_loop().call_later(self._idle, self._expire, entry)
        self._kept[entry] = (session, timer)

    def _expire(self, entry: tuple[PoolKey, int]) -> None:
        kept = self._kept.pop(entry, None)
        if kept is not None:
            self._close(kept[0])

    def _close(self, session: SmtpSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def idle_count(self) -> int:
        return len(self._kept)

    async def close(self) -> None:
        """QUIT on every kept session and wait (bounded by each session's reply timeout) for them all."""
        while self._kept:
            _entry, (session, timer) = self._kept.popitem()
            timer.cancel()
            self._close(session)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
