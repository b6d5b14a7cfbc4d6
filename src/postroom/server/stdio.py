"""An SMTP session over a pair of blocking byte streams (``sendmail -bs``): drives smtp.ServerConnection.

It answers the protocol's events and gathers each message; what a recipient may be and where a finished
message goes are the caller's (``check_recipient``, ``deliver``). No sockets, TLS or AUTH here: the peer is
a local process on our standard input, already trusted as the user it runs as.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from postroom.smtp import events, replies
from postroom.smtp.events import NEED_DATA
from postroom.smtp.server import ServerConnection, ServerSettings
from postroom.smtp.types import Address, Reply

__all__ = ["StdioMessage", "StdioSession"]

_READ_SIZE = 65_536


class _Reader(Protocol):
    def read1(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StdioMessage:
    """One message received: the envelope as given (sender None is ``<>``) and the dot-unstuffed body."""

    sender: Address | None
    recipients: Sequence[Address]
    body: bytes


class StdioSession:
    """One conversation: ``run(stdin, stdout)`` returns when the client quits or its input ends."""

    def __init__(
        self,
        *,
        settings: ServerSettings,
        check_recipient: Callable[[Address], Reply | None],
        deliver: Callable[[StdioMessage], Reply],
    ) -> None:
        self._settings = settings
        self._check_recipient = check_recipient
        self._deliver = deliver
        self._mail: events.Mail | None = None
        self._recipients: list[Address] = []
        self._body = bytearray()

    def run(self, reader: _Reader, writer: BinaryIO) -> int:
        """Serve until QUIT or end of input; returns how many messages were accepted."""
        conn = ServerConnection(settings=self._settings)
        writer.write(conn.send(replies.greeting(self._settings.hostname)))
        accepted = 0
        while not conn.closed:
            event = conn.next_event()
            if event is NEED_DATA:
                writer.flush()
                conn.receive_data(reader.read1(_READ_SIZE))  # b"" at end of input closes
                continue
            if isinstance(event, events.DataChunk):
                if len(self._body) <= self._settings.max_message_size:  # past it the protocol refuses
                    self._body += event.data
                continue
            if isinstance(event, events.Bdat):  # pragma: no cover - CHUNKING is not offered here
                continue
            reply = self._answer(conn, event)
            accepted += isinstance(event, events.EndOfData) and reply.is_positive
            writer.write(conn.send(reply))
        writer.flush()
        return accepted

    def _answer(self, conn: ServerConnection, event: events.Event) -> Reply:
        if isinstance(event, events.Ehlo | events.Rset):
            self._reset()
        elif isinstance(event, events.Mail):
            self._reset()
            self._mail = event
        elif isinstance(event, events.Rcpt):
            refusal = self._check_recipient(event.forward_path)
            if refusal is not None:
                return refusal
            self._recipients.append(event.forward_path)
        elif isinstance(event, events.Data):
            self._body = bytearray()
        elif isinstance(event, events.EndOfData):
            return self._end_of_data(event)
        return conn.default_reply(event)

    def _end_of_data(self, event: events.EndOfData) -> Reply:
        mail, recipients, body = self._mail, self._recipients, bytes(self._body)
        self._reset()
        if event.problem is not None:
            return event.problem
        if mail is None or not recipients:  # pragma: no cover - the protocol sequences DATA
            return replies.BAD_SEQUENCE
        return self._deliver(StdioMessage(sender=mail.reverse_path, recipients=tuple(recipients), body=body))

    def _reset(self) -> None:
        self._mail = None
        self._recipients = []
        self._body = bytearray()
