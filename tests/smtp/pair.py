"""ClientServerPair: our ClientConnection wired to our ServerConnection in memory (h11's ConnectionPair).

Bytes move both ways by ``exchange()``; the server side answers every event through ``answer`` (the default
replies, and ``replies.queued("Q1")`` for a message), so a test exercises both state machines at once.
"""

from __future__ import annotations

from collections.abc import Callable

from postroom.smtp import replies
from postroom.smtp.client import ClientConnection, ClientReply, ClientSettings
from postroom.smtp.events import NEED_DATA, Bdat, DataChunk, EndOfChunk, EndOfData, Event
from postroom.smtp.server import ServerConnection, ServerSettings, ServerState
from postroom.smtp.types import Reply

Answer = Callable[[ServerConnection, Event], Reply]
QUEUED = replies.queued("Q1")


def default_answer(server: ServerConnection, event: Event) -> Reply:
    """What a server that accepts everything says: the default reply, or "queued" for a whole message."""
    if isinstance(event, EndOfData) or (isinstance(event, EndOfChunk) and event.last):
        return event.problem or QUEUED
    return server.default_reply(event)


class ClientServerPair:
    """A client and a server conversation, the greeting already on its way to the client."""

    def __init__(
        self,
        *,
        client: ClientSettings | None = None,
        server: ServerSettings | None = None,
        answer: Answer = default_answer,
    ) -> None:
        self.client = ClientConnection(settings=client or ClientSettings(local_hostname="client.test"))
        server_settings = server or ServerSettings(hostname="mx.test")
        self.server = ServerConnection(settings=server_settings)
        self.answer = answer
        self.events: list[Event] = []  # every server event, in order
        self.to_server: list[bytes] = []  # every piece the client sent
        self.to_client: list[bytes] = []  # every piece the server sent
        self._eof_sent = False
        self._deliver(self.server.send(replies.greeting(server_settings.hostname)))

    def exchange(self) -> list[ClientReply]:
        """Move bytes both ways, answering every server event, until both sides are quiet; return the
        client replies read on the way."""
        got: list[ClientReply] = []
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                self.to_server.append(to_server)
                self.server.receive_data(to_server)
            to_client = self._serve()
            self._deliver(to_client)
            got += self._read_replies()
            if not to_server and not to_client:
                return got

    def start_tls(self) -> None:
        """Both sides finished the (imaginary) TLS handshake."""
        self.server.tls_started()
        self.client.tls_started()

    def body(self) -> bytes:
        """The message octets the server emitted, over all transactions."""
        return b"".join(event.data for event in self.events if isinstance(event, DataChunk))

    def _serve(self) -> bytes:
        out = []
        server = self.server
        while not server.closed and server.state is not ServerState.TLS_PENDING:
            event = server.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event)
            self.events.append(event)
            if not isinstance(event, Bdat | DataChunk):
                out.append(server.send(self.answer(server, event)))
        return b"".join(out)

    def _deliver(self, data: bytes) -> None:
        if data:
            self.to_client.append(data)
            self.client.receive_data(data)
        if self.server.closed and not self._eof_sent:  # the server hangs up after its last reply
            self._eof_sent = True
            self.client.receive_data(b"")

    def _read_replies(self) -> list[ClientReply]:
        got = []
        while self.client.awaiting_replies:
            reply = self.client.next_reply()
            if reply is NEED_DATA:
                break
            assert isinstance(reply, ClientReply)
            got.append(reply)
        return got
