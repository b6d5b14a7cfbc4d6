"""The timeouts of one SMTP session (RFC 5321 4.5.3.2): a deadline for the whole next command line (a client
dribbling bytes cannot hold us), or an inactivity limit while message data flows. On expiry it calls back
with the 421 to send; it never waits on the session's behalf (a session waiting on the queue, a password
check or a TLS handshake is not timed out)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from postroom.config.schema import SmtpSettings
from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["Deadlines"]


class Deadlines:
    """``arm(receiving=...)`` after each turn, ``cancel()`` when a command is in, ``touch()`` per read."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: SmtpSettings,
        busy: Callable[[], bool],
        expire: Callable[[Reply, str], None],  # the reply to send, the reason to log; then close
    ) -> None:
        self._loop = loop
        self._settings = settings
        self._busy = busy
        self._expire = expire
        self._timer: asyncio.TimerHandle | None = None
        self._kind = ""
        self._last_activity = 0.0

    def touch(self) -> None:
        """Bytes arrived."""
        self._last_activity = self._loop.time()

    def arm(self, *, receiving: bool) -> None:
        """A deadline for the whole next command line, or (``receiving`` message data) an inactivity limit."""
        if receiving:
            if self._kind != "data":
                self.cancel()
                self._kind = "data"
                self._timer = self._loop.call_later(self._settings.data_timeout, self._on_data_timer)
        elif self._timer is None:
            self._kind = "command"
            self._timer = self._loop.call_later(self._settings.command_timeout, self._on_command_timer)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._kind = ""

    def _on_command_timer(self) -> None:
        self._timer = None
        if not self._busy():
            self._expire(replies.COMMAND_TIMEOUT, "command timeout")

    def _on_data_timer(self) -> None:
        self._timer = None
        self._kind = ""
        if self._busy():
            return
        idle_for = self._loop.time() - self._last_activity
        remaining = self._settings.data_timeout - idle_for
        if remaining > 0:
            self._kind = "data"
            self._timer = self._loop.call_later(remaining, self._on_data_timer)
            return
        self._expire(replies.DATA_TIMEOUT, "data timeout")
