"""Pure helpers for the protocol tests: a server conversation fed bytes and answered with default replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from postroom.smtp import replies
from postroom.smtp.events import NEED_DATA, Bdat, DataChunk, EndOfChunk, EndOfData, Event
from postroom.smtp.server import ServerConnection, ServerSettings, ServerState

QUEUED = replies.queued("Q1")


class Talk:
    """A greeted server connection. ``say(line)`` sends one command and returns the reply as text;
    ``feed(bytes)`` sends raw bytes and answers every event until the server needs more."""

    def __init__(self, **settings: Any) -> None:
        self.conn = ServerConnection(settings=ServerSettings(hostname="mx.test", **settings))
        self.conn.send(replies.greeting("mx.test"))
        self.events: list[Event] = []
        self.replies: list[bytes] = []

    def answer(self, event: Event) -> bytes:
        if isinstance(event, EndOfData) or (isinstance(event, EndOfChunk) and event.last):
            reply = event.problem or QUEUED
        else:
            reply = self.conn.default_reply(event)
        return self.conn.send(reply)

    def feed(self, data: bytes) -> list[Event]:
        """Feed ``data`` and answer everything; return the events (replies land in ``self.replies``)."""
        self.conn.receive_data(data)
        events: list[Event] = []
        while not self.conn.closed and self.conn.state is not ServerState.TLS_PENDING:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event)
            events.append(event)
            if not isinstance(event, Bdat | DataChunk):
                self.replies.append(self.answer(event))
        self.events += events
        return events

    def say(self, line: str) -> str:
        """One command line; the reply text (all lines, CRLF removed). Fails if no single reply came back."""
        before = len(self.replies)
        self.feed(line.encode("utf-8") + b"\r\n")
        assert len(self.replies) == before + 1, self.replies[before:]
        return self.replies[-1].decode("utf-8").rstrip("\r\n")

    def body(self) -> bytes:
        """The message octets of all DataChunk events so far."""
        return b"".join(event.data for event in self.events if isinstance(event, DataChunk))

    def ehlo_and_envelope(self, *, mail: str = "MAIL FROM:<a@sender.test>") -> None:
        assert self.say("EHLO client.test").startswith("250")
        assert self.say(mail).startswith("250 2.1.0")
        assert self.say("RCPT TO:<b@rcpt.test>").startswith("250 2.1.5")


@pytest.fixture
def talk() -> Callable[..., Talk]:
    return Talk
