"""Server-side SMTP as a sans-I/O state machine: ``receive_data`` bytes, ``next_event``, ``send`` a reply.

It frames command lines and hands them to ``commands.py`` (the per-verb rules, which check the sequence
against ``states.py`` and parse with ``grammar.py``), reads message bodies with ``data.py``, checks and
applies replies with ``server_replies.py`` and ``states.py``, and counts errors. Its settings are
``server_settings.py``'s. It decides nothing about policy, and never touches a socket or clock.

Contract for the driver (the session):

- ``send()`` the greeting first (220; or 554, after which only QUIT is served, RFC 5321 3.1; or 421).
- Loop: ``next_event()``; answer every event except ``Bdat`` and ``DataChunk`` with exactly one ``send()``
  before asking for the next (pipelined commands, RFC 2920, are answered in order); on ``NEED_DATA`` read more
  bytes and ``receive_data()`` them (``b""`` at end of input). After every ``send()``, check ``closed``: it is
  True after 221, after any 421, after the error limit, and after the reply to a ``CommandError`` that ends
  the conversation (an HTTP request, or a BDAT whose size cannot be read, so its octets cannot be skipped).
- A 421 (shutting down, timeout) may be sent at any time, even with nothing to answer; it closes.
- Error replies (4xx/5xx) to commands are counted; once ``max_errors`` were sent, the next one is replaced
  by replies.TOO_MANY_ERRORS (421) and the connection closes. Not counted: 421s, 452 4.5.3 (too many
  recipients: the client is told to send the rest later), 451 4.7.1 (greylisting and hourly rates: told to
  come back later), and replies to EndOfData/EndOfChunk (verdicts on a message, not on a command).
"""

from __future__ import annotations

from postroom.smtp import replies
from postroom.smtp.commands import Conversation, decode_command, parse_command
from postroom.smtp.data import ChunkReader, DotReader
from postroom.smtp.errors import LocalProtocolError, RemoteProtocolError
from postroom.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    CommandError,
    Data,
    DataChunk,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Help,
    Mail,
    NeedData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from postroom.smtp.grammar import parse_bdat
from postroom.smtp.server_replies import check_reply, counts_as_error, default_reply, ehlo_keywords
from postroom.smtp.server_settings import ServerSettings
from postroom.smtp.states import (
    SEQUENCE_ERRORS,
    TRANSACTION_STATES,
    ServerState,
    Step,
    next_state,
)
from postroom.smtp.types import Reply

__all__ = ["ServerConnection", "ServerSettings", "ServerState"]


_STEPS: dict[type[Event], Step] = {
    Ehlo: Step.EHLO, Mail: Step.MAIL, Rcpt: Step.RCPT, Data: Step.DATA, Rset: Step.RSET, Noop: Step.NOOP,
    Quit: Step.QUIT, Vrfy: Step.VRFY, Help: Step.HELP, StartTls: Step.STARTTLS, Auth: Step.AUTH,
    EndOfData: Step.END_OF_DATA,
}  # fmt: skip
# Requests from web browsers and proxies sent to an SMTP port (cross-protocol attacks): answer and hang up.
_HTTP_VERBS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "TRACE", "PATCH"})
_LONG_VERBS = (b"MAIL ", b"RCPT ", b"AUTH ")
_SASL_LINE = 12_288 + 2  # RFC 4954 4: a SASL response line may be 12,288 octets (+ CRLF)


def _misuse(reason: str) -> LocalProtocolError:
    return LocalProtocolError(replies.LOCAL_ERROR, reason=reason)


class ServerConnection:
    """One SMTP server conversation. See the module docstring for how to drive it."""

    __slots__ = (
        "_authenticated", "_buffer", "_chunk", "_closes_after_reply", "_data_ended", "_dot", "_errors",
        "_extended", "_mail", "_message_size", "_pending", "_recipients", "_sasl", "_settings",
        "_skipping_line", "_state", "_tls",
    )  # fmt: skip

    def __init__(self, *, settings: ServerSettings) -> None:
        self._settings = settings
        self._state = ServerState.CONNECTED
        self._buffer = bytearray()
        self._pending: Event | None = None  # the event waiting for its reply
        self._sasl = False  # a 334 was sent: the next line is a SASL response (RFC 4954 4)
        self._closes_after_reply = False
        self._skipping_line = False  # discarding an over-long command line up to its LF
        self._errors = 0
        self._tls = settings.implicit_tls
        self._extended = False  # the last accepted greeting was EHLO, not HELO
        self._authenticated = False
        self._dot: DotReader | None = None
        self._data_ended = False
        self._chunk: ChunkReader | None = None
        self._mail: Mail | None = None  # the transaction's accepted MAIL
        self._recipients = 0
        self._message_size = 0  # octets received in this transaction's BDAT chunks

    # --- public state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ServerState.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def recipient_count(self) -> int:
        """Recipients accepted (answered 2xx) in the current transaction."""
        return self._recipients

    def ehlo_keywords(self) -> list[str]:
        """The extensions offered in the EHLO reply, in the order they are listed (RFC 5321 4.1.1.1)."""
        return ehlo_keywords(self._settings, tls=self._tls)

    # --- the three verbs --------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; b"" means end of input (the connection is then closed).

        Bytes arriving after the connection closed are ignored.
        """
        if self._state is ServerState.CLOSED:
            return
        if not data:
            self._pending = None
            self._enter(ServerState.CLOSED)
        elif self._state is ServerState.TLS_PENDING:
            raise _misuse("plaintext bytes fed while waiting for the TLS handshake")
        else:
            self._buffer += data

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises LocalProtocolError while an event waits for its reply."""
        if self._pending is not None:
            raise _misuse(f"{type(self._pending).__name__} has not been answered")
        state = self._state
        if state is ServerState.CONNECTED or state is ServerState.TLS_PENDING:
            raise _misuse(f"no events in state {state.name}: send the greeting / call tls_started() first")
        if state is ServerState.CLOSED:
            return NEED_DATA
        if state is ServerState.DATA:
            event = self._next_data_event()
        elif self._sasl:
            event = self._next_sasl_event()
        elif self._chunk is not None:
            event = self._next_chunk_event()
        else:
            event = self._next_command_event()
        if not isinstance(event, (NeedData, Bdat, DataChunk)):
            self._pending = event
        return event

    def send(self, reply: Reply) -> bytes:
        """Format ``reply`` as the answer to the pending event (or the greeting) and apply its transition."""
        if self._state is ServerState.CLOSED:
            raise _misuse("send() on a closed connection")
        if self._state is ServerState.CONNECTED:
            return self._send_greeting(reply)
        event = self._pending
        if event is None:
            if reply.code != 421:  # RFC 5321 3.8: the server may always close with 421
                raise _misuse("send() with no event to answer")
            self._enter(ServerState.CLOSED)
            return reply.to_bytes()
        check_reply(event, reply)
        self._pending = None
        self._sasl = reply.code == 334  # RFC 4954 4: the next line is the client's response, not a command
        if self._sasl:
            return reply.to_bytes()
        if counts_as_error(event, reply):
            self._errors += 1
            if self._errors > self._settings.max_errors:
                reply = replies.TOO_MANY_ERRORS
        if reply.code == 421 or self._closes_after_reply:
            self._enter(ServerState.CLOSED)
        else:
            self._advance(event, reply)
        return reply.to_bytes()

    def default_reply(self, event: Event) -> Reply:
        """The standard positive reply to ``event`` (a CommandError's own reply). End of a message has none:
        only the queue can say "queued as"."""
        return default_reply(event, self._settings, tls=self._tls)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS finished: the client starts over with EHLO (RFC 3207 4.2)."""
        if self._state is not ServerState.TLS_PENDING:
            raise _misuse("tls_started() without an accepted STARTTLS")
        self._tls = True
        self._extended = False  # RFC 3207 4.2: forget everything learnt from the client before TLS
        self._authenticated = False
        self._sasl = False
        self._buffer.clear()
        self._enter(next_state(self._state, Step.TLS_STARTED, accepted=True))

    # --- replies and transitions --------------------------------------------------------------------------

    def _send_greeting(self, reply: Reply) -> bytes:
        if reply.code == 421:
            self._enter(ServerState.CLOSED)
        elif reply.code in (220, 554):
            self._enter(next_state(self._state, Step.GREETING, accepted=reply.code == 220))
        else:
            raise _misuse(f"a greeting must be 220, 554 or 421, not {reply.code}")
        return reply.to_bytes()

    def _advance(self, event: Event, reply: Reply) -> None:
        if isinstance(event, EndOfChunk):
            step = Step.LAST_CHUNK if event.last else Step.CHUNK
        elif isinstance(event, CommandError):
            return
        elif isinstance(event, AuthResponse):
            step = Step.AUTH
        else:
            step = _STEPS[type(event)]
        accepted = reply.is_positive
        new_state = next_state(self._state, step, accepted=accepted)
        if accepted:
            if isinstance(event, Ehlo):
                self._extended = event.extended
            elif isinstance(event, Auth | AuthResponse) and reply.code == 235:
                self._authenticated = True
        self._enter(new_state)
        if accepted and isinstance(event, Mail):
            self._mail = event
        elif accepted and isinstance(event, Rcpt):
            self._recipients += 1

    def _enter(self, state: ServerState) -> None:
        if state not in TRANSACTION_STATES:
            self._mail, self._recipients, self._message_size = None, 0, 0
            self._chunk = None
        if state is ServerState.DATA:
            settings = self._settings
            self._dot = DotReader(
                max_size=settings.max_message_size,
                normalize=settings.bare_line_endings == "normalize",
                reject_long_lines=settings.long_lines == "reject",
            )
            self._data_ended = False
        else:
            self._dot = None
        if state is ServerState.TLS_PENDING:
            self._buffer.clear()  # CVE-2011-0411: nothing sent before the handshake may count after it
        if state is ServerState.CLOSED:
            self._buffer.clear()
        self._state = state

    # --- message bodies ---------------------------------------------------------------------------------

    def _next_data_event(self) -> Event | NeedData:
        reader = self._dot
        assert reader is not None
        if not self._data_ended and self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            out, rest = reader.feed(data)
            if rest is not None:
                self._data_ended = True
                self._buffer += rest  # pipelined commands after the end of data
            if out:
                return DataChunk(out, reader.crlf_only)
        if self._data_ended:
            return EndOfData(reader.size, reader.problem)
        return NEED_DATA

    def _next_chunk_event(self) -> Event | NeedData:
        chunk = self._chunk
        assert chunk is not None
        while chunk.remaining and self._buffer:
            piece = chunk.read(self._buffer)
            if chunk.refusal is None:
                self._message_size += len(piece)
                if not self._too_big():
                    return DataChunk(piece)
        if chunk.remaining:
            return NEED_DATA
        self._chunk = None
        if chunk.refusal is not None:
            return CommandError(chunk.refusal, reason="BDAT out of sequence; its octets were discarded")
        problem = replies.MESSAGE_TOO_BIG if self._too_big() else None
        return EndOfChunk(self._message_size, chunk.last, problem)

    def _too_big(self) -> bool:
        limit = self._settings.max_message_size
        return bool(limit) and self._message_size > limit

    # --- command lines ----------------------------------------------------------------------------------

    def _next_command_event(self) -> Event | NeedData:
        line = self._read_line()
        if line is None:
            return NEED_DATA
        if isinstance(line, Reply):
            return CommandError(line, reason="malformed command line")
        command = decode_command(line)
        if isinstance(command, CommandError):
            return command
        verb, args = command
        if verb in _HTTP_VERBS or verb.endswith(":"):
            return self._closing_error(replies.HTTP_COMMAND, "HTTP request on the SMTP port")
        try:
            if verb == "BDAT":
                return self._on_bdat(args)
            return parse_command(verb, args, self._conversation())
        except RemoteProtocolError as error:
            return CommandError(error.reply, reason=error.reason)

    def _next_sasl_event(self) -> Event | NeedData:
        line = self._read_line(limit=_SASL_LINE)
        if line is None:
            return NEED_DATA
        self._sasl = False
        if isinstance(line, Reply):
            return CommandError(line, reason="malformed SASL response")
        if line == b"*":  # RFC 4954 4: the client cancels the exchange
            return CommandError(replies.AUTH_CANCELLED, reason="client cancelled AUTH")
        if not line.isascii() or b"\0" in line or b" " in line:
            return CommandError(replies.AUTH_RESPONSE_SYNTAX, reason="SASL response is not base64")
        return AuthResponse(line.decode("ascii"))

    def _read_line(self, limit: int | None = None) -> bytes | Reply | None:
        """One command line without its CRLF, a Reply for a line that is refused as a whole, or None."""
        buffer = self._buffer
        newline = buffer.find(b"\n")
        if self._skipping_line:
            if newline < 0:
                buffer.clear()
                return None
            del buffer[: newline + 1]
            self._skipping_line = False
            return replies.LINE_TOO_LONG
        settings = self._settings
        if limit is None:
            long = buffer[:5].upper() in _LONG_VERBS
            limit = (
                max(settings.max_param_line, settings.max_command_line) if long else settings.max_command_line
            )
        if newline < 0:
            if len(buffer) >= limit:  # no CRLF can arrive in time: drop what we have, skip to the next LF
                buffer.clear()
                self._skipping_line = True
            return None
        line = bytes(buffer[: newline + 1])
        del buffer[: newline + 1]
        if newline + 1 > limit:
            return replies.LINE_TOO_LONG
        if newline == 0 or line[-2] != 13:  # RFC 5321 2.3.8: lines end with CRLF, never a bare LF
            return replies.BARE_LF_IN_COMMAND
        return line[:-2]

    def _closing_error(self, reply: Reply, reason: str) -> CommandError:
        self._closes_after_reply = True
        return CommandError(reply, reason=reason)

    def _conversation(self) -> Conversation:
        return Conversation(
            settings=self._settings, state=self._state, tls=self._tls, extended=self._extended,
            authenticated=self._authenticated, mail=self._mail, recipients=self._recipients,
        )  # fmt: skip

    def _on_bdat(self, args: str) -> Event | NeedData:
        try:
            bdat = parse_bdat(args)
        except RemoteProtocolError as error:
            # The chunk's octets follow, but how many is unknown: hang up rather than read them as commands.
            return self._closing_error(error.reply, error.reason)
        refusal = None if self._settings.chunking else replies.NOT_IMPLEMENTED
        refusal = refusal or SEQUENCE_ERRORS.get(self._state, {}).get(Step.BDAT)
        self._chunk = ChunkReader(bdat.size, last=bdat.last, refusal=refusal)
        if refusal is not None:  # RFC 3030 2: the octets are read (and dropped) before the error reply
            return self._next_chunk_event()
        self._enter(next_state(self._state, Step.BDAT, accepted=True))
        return bdat
