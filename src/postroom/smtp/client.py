"""Client-side SMTP as a sans-I/O state machine: command methods queue bytes, ``next_reply`` reads replies.

It writes command lines (checking their sequence against ``client_states.py`` and the extensions the
server offered), dot-stuffs DATA bodies, frames BDAT chunks, and parses replies (multi-line, enhanced status
codes). It decides nothing about delivery (which host, whether a failure is temporary, when to retry) and
never touches a socket or clock.

Contract for the driver (``postroom.delivery``):

- After connecting, ``receive_data()`` what the server sends and call ``next_reply()`` until it returns a
  ``ClientReply`` (not ``NEED_DATA``): the first one answers ``Command.GREETING``. ``b""`` means end of input.
- Each command method (``ehlo``, ``mail``, ``rcpt``, ``data`` ...) queues bytes; send ``data_to_send()``
  after calling it. Each expects one reply, and ``next_reply()`` hands the replies back in the order the
  commands were given, as ``ClientReply(command, reply, recipient)``; ``awaiting_replies`` counts those still
  due. A command given out of sequence, or an option the server did not offer, raises
  ``LocalProtocolError`` before anything is queued: its ``.reply`` is ``replies.LOCAL_ERROR`` for misuse,
  or a permanent reply (``REMOTE_MESSAGE_TOO_BIG``, ``REMOTE_NO_SMTPUTF8``, ``REMOTE_NO_8BITMIME``,
  ``REMOTE_NO_BINARYMIME``) when this server can never take the message, so the driver can bounce with it.
- PIPELINING (RFC 2920): when offered, MAIL, RCPT, RSET, BDAT and the end of a DATA body may be given
  without reading the replies in between; EHLO, HELO, STARTTLS, DATA, NOOP and QUIT end a group (read their
  reply first). Without PIPELINING every reply must be read before the next command. The replies to
  pipelined RCPTs carry their recipient: those are the per-recipient outcomes. Check them all (RFC 2920
  3.1): if DATA got 354 while ``accepted_recipients`` is empty, end the body at once with
  ``send_body(b"", final=True)``.
- EHLO refused (4xx/5xx, not 421): the state stays GREETED; fall back to ``helo()`` (RFC 5321 3.2).
- DATA: after its 354, ``send_body(chunk, final=...)`` as often as needed; the client dot-stuffs across chunk
  boundaries, turns bare CR and LF into CRLF (RFC 5321 2.3.8), and ends the body with CRLF "." CRLF.
- STARTTLS: after its 220, do the handshake, then ``tls_started()``; the extensions are forgotten and the
  state is GREETED: say EHLO again (RFC 3207 4.2). Bytes that came after the 220 are discarded.
- A 421 reply, at any time, closes (RFC 5321 3.8): ``state`` is CLOSED and the commands that were still
  awaiting replies never get one (treat them as temporary failures). End of input before a reply raises
  ``RemoteProtocolError`` (``replies.REMOTE_CLOSED``); a malformed reply raises it with
  ``replies.REMOTE_REPLY_MALFORMED``. Both close the connection. A reply that comes while no command awaits
  one (RFC 5321 allows only a 421 there) is kept and read as the reply to the next command.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from postroom.smtp import replies
from postroom.smtp.client_states import (
    GROUP_ENDERS,
    POSITIVE_CLASS,
    SENDABLE,
    TRANSACTION_STATES,
    ClientState,
    Command,
    next_state,
    project,
)
from postroom.smtp.data import DotStuffer
from postroom.smtp.errors import LocalProtocolError, RemoteProtocolError
from postroom.smtp.events import NEED_DATA, NeedData
from postroom.smtp.grammar import is_domain, parse_address_literal, parse_params, parse_path
from postroom.smtp.reply_reader import ReplyReader
from postroom.smtp.types import Address, Reply

__all__ = ["ClientConnection", "ClientReply", "ClientSettings", "ClientState", "Command", "DotStuffer"]

_NO_PARAMS: Mapping[str, str | None] = MappingProxyType({})
_BODY_TYPES = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})
_MAIL_KEYWORDS = frozenset({"SIZE", "BODY", "SMTPUTF8"})  # set through mail()'s own arguments
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")  # ehlo-keyword (RFC 5321 4.1.1.1)
_MIN_REPLY_LINE = 512  # RFC 5321 4.5.3.1.5: reply lines of 512 octets with the CRLF must be accepted


def _misuse(reason: str) -> LocalProtocolError:
    return LocalProtocolError(replies.LOCAL_ERROR, reason=reason)


def _malformed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(replies.REMOTE_REPLY_MALFORMED, reason=reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """Who we say we are, and how much reply we are willing to buffer."""

    local_hostname: str  # said in EHLO/HELO: a domain name or an address literal (RFC 5321 4.1.1.1)
    max_reply_line: int = 2048  # octets with CRLF; RFC 5321 4.5.3.1.5 says 512, so be liberal but bounded
    max_reply_lines: int = 100  # lines in one multi-line reply (an EHLO reply lists a dozen at most)

    def __post_init__(self) -> None:
        name = self.local_hostname
        if not (is_domain(name) or parse_address_literal(name) is not None):
            raise ValueError(f"local_hostname must be a domain name or an address literal, not {name!r}")
        if self.max_reply_line < _MIN_REPLY_LINE or self.max_reply_lines < 1:
            raise ValueError("max_reply_line must be at least 512 and max_reply_lines at least 1")


@dataclass(frozen=True, slots=True)
class ClientReply:
    """One server reply and the command it answers; ``recipient`` is set for the reply to a RCPT."""

    command: Command
    reply: Reply
    recipient: Address | None = None


@dataclass(frozen=True, slots=True)
class _Awaited:
    command: Command
    recipient: Address | None = None


def _format_params(params: Mapping[str, str | None]) -> str:
    return "".join(f" {key}" if value is None else f" {key}={value}" for key, value in params.items())


def _parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO reply lines after the first: keyword upper-cased -> its parameters (RFC 5321 4.1.1.1)."""
    extensions = {}
    for line in reply.lines()[1:]:
        keyword, _, params = line.strip(" ").partition(" ")
        if _KEYWORD.fullmatch(keyword):  # liberal: lines that are not ehlo-lines are skipped
            extensions[keyword.upper()] = params.strip(" ")
    return extensions


class ClientConnection:
    """One SMTP client conversation. See the module docstring for how to drive it."""

    __slots__ = (
        "_awaited", "_eof", "_extended", "_extensions", "_mail_body", "_mail_smtputf8", "_outgoing",
        "_projected", "_reader", "_recipients", "_sasl_pending", "_settings", "_state", "_stuffer", "_tls",
    )  # fmt: skip

    def __init__(self, *, settings: ClientSettings) -> None:
        self._settings = settings
        self._state = ClientState.GREETING
        self._awaited: deque[_Awaited] = deque([_Awaited(Command.GREETING)])  # replies due, in order
        # The state once every awaited reply is positive: what the sequence checks look at.
        self._projected = project(self._state, (awaited.command for awaited in self._awaited))
        self._reader = ReplyReader(max_line=settings.max_reply_line, max_lines=settings.max_reply_lines)
        self._outgoing = bytearray()
        self._eof = False
        self._tls = False
        self._extended = False  # the last accepted greeting was EHLO, not HELO
        self._extensions: dict[str, str] = {}
        self._stuffer: DotStuffer | None = None
        self._recipients: list[Address] = []  # accepted in the current transaction
        self._mail_smtputf8 = False  # the MAIL given last asked for SMTPUTF8 (RCPT checks it)
        self._mail_body: str | None = None  # ... and its BODY type (DATA checks it)
        self._sasl_pending = False  # a 334 was read: auth_response() is due (RFC 4954 4)

    # --- public state ---------------------------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """Where the conversation stands as of the last reply read."""
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is ClientState.CLOSED

    @property
    def awaiting_replies(self) -> int:
        """How many commands given are still waiting for their reply."""
        return len(self._awaited)

    @property
    def tls_active(self) -> bool:
        return self._tls

    @property
    def extensions(self) -> Mapping[str, str]:
        """From the last accepted EHLO reply: keyword (upper case) -> its parameters ("" when none)."""
        return MappingProxyType(self._extensions)

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self._extensions

    @property
    def max_size(self) -> int | None:
        """The server's SIZE limit in octets, or None when it states none (RFC 1870 4: "SIZE 0" or no
        number means no fixed limit)."""
        value = self._extensions.get("SIZE", "")
        if not (value.isascii() and value.isdigit()):
            return None
        return int(value) or None

    @property
    def accepted_recipients(self) -> tuple[Address, ...]:
        """The recipients accepted (2xx) in the current transaction, in order."""
        return tuple(self._recipients)

    # --- bytes in and out -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the server; b"" means end of input. Bytes after the connection closed are ignored.

        Raises LocalProtocolError for bytes fed during the TLS handshake or after end of input."""
        if self._state is ClientState.CLOSED:
            return
        if self._state is ClientState.TLS_PENDING:
            raise _misuse("plaintext bytes fed while waiting for the TLS handshake")
        if self._eof:
            raise _misuse("receive_data() after end of input")
        if data:
            self._reader.feed(data)
            return
        self._eof = True
        if not self._awaited:
            self._close()

    def data_to_send(self) -> bytes:
        """The bytes queued by the command methods since the last call."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def next_reply(self) -> ClientReply | NeedData:
        """The reply to the oldest command still awaiting one, or NEED_DATA.

        Raises LocalProtocolError when no reply is awaited, RemoteProtocolError (and closes) when the
        server's reply is malformed or the input ended before it.
        """
        if not self._awaited:
            raise _misuse("the connection is closed" if self.closed else "no command is awaiting a reply")
        try:
            reply = self._reader.next_reply()
        except RemoteProtocolError:
            self._close()
            raise
        if reply is None:
            if not self._eof:
                return NEED_DATA
            command = self._awaited[0].command
            self._close()
            raise RemoteProtocolError(
                replies.REMOTE_CLOSED,
                reason=f"the server closed the connection before answering {command.name}",
            )
        awaited = self._awaited.popleft()
        self._apply(awaited, reply)
        return ClientReply(awaited.command, reply, awaited.recipient)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS finished: forget the extensions, say EHLO again (RFC 3207 4.2)."""
        if self._state is not ClientState.TLS_PENDING:
            raise _misuse("tls_started() without a STARTTLS answered 220")
        self._tls = True
        self._extended = False
        self._extensions = {}
        self._enter(ClientState.GREETED)
        self._projected = ClientState.GREETED

    # --- commands -------------------------------------------------------------------------------------

    def ehlo(self) -> None:
        self._check_can_send(Command.EHLO)
        self._queue(Command.EHLO, f"EHLO {self._settings.local_hostname}")

    def helo(self) -> None:
        self._check_can_send(Command.HELO)
        self._queue(Command.HELO, f"HELO {self._settings.local_hostname}")

    def starttls(self) -> None:
        self._check_can_send(Command.STARTTLS)
        if self._tls:
            raise _misuse("TLS is already active")
        if not self.supports("STARTTLS"):
            raise _misuse("the server does not offer STARTTLS")
        self._queue(Command.STARTTLS, "STARTTLS")

    def mail(
        self,
        sender: Address | None,
        *,
        size: int | None = None,
        body: str | None = None,
        smtputf8: bool = False,
        extra: Mapping[str, str | None] = _NO_PARAMS,
    ) -> None:
        """MAIL FROM (``None``: the null reverse path ``<>``). ``size`` is sent only when SIZE is offered and
        refused locally when over the server's limit (RFC 1870 6.1); ``body`` is 7BIT, 8BITMIME or
        BINARYMIME (BODY=7BIT is left out when 8BITMIME is not offered: 7-bit is the default); ``extra``
        holds other ESMTP parameters (say RET, ENVID) the caller knows the server offered."""
        self._check_can_send(Command.MAIL)
        params = self._mail_params(size=size, body=body, smtputf8=smtputf8)
        params.update(self._extra_params(extra, reserved=_MAIL_KEYWORDS))
        path = "" if sender is None else self._path(sender, smtputf8=smtputf8, postmaster=False)
        self._mail_smtputf8 = smtputf8
        self._mail_body = params.get("BODY")
        self._queue(Command.MAIL, f"MAIL FROM:<{path}>{_format_params(params)}")

    def rcpt(self, recipient: Address, *, extra: Mapping[str, str | None] = _NO_PARAMS) -> None:
        """RCPT TO. ``Address("Postmaster", "")`` is written ``<Postmaster>`` (RFC 5321 4.1.1.3)."""
        self._check_can_send(Command.RCPT)
        path = self._path(recipient, smtputf8=self._mail_smtputf8, postmaster=True)
        params = self._extra_params(extra, reserved=frozenset())
        self._queue(Command.RCPT, f"RCPT TO:<{path}>{_format_params(params)}", recipient=recipient)

    def data(self) -> None:
        self._check_can_send(Command.DATA)
        if self._mail_body == "BINARYMIME":
            raise _misuse("BODY=BINARYMIME must be sent with BDAT (RFC 3030 3)")
        self._queue(Command.DATA, "DATA")

    def send_body(self, body_chunk: bytes, *, final: bool) -> None:
        """Part of the DATA body (after the 354); with ``final`` the body ends and its reply is awaited."""
        if self._state is not ClientState.DATA or self._awaited:
            raise _misuse("send_body() belongs between the 354 reply to DATA and the final chunk")
        stuffer = self._stuffer
        assert stuffer is not None
        self._outgoing += stuffer.feed(body_chunk)
        if final:
            self._outgoing += stuffer.end()
            self._await(_Awaited(Command.END_OF_DATA))

    def bdat(self, chunk: bytes, *, last: bool) -> None:
        """One BDAT chunk (RFC 3030 2), sent raw: no dot-stuffing, no line-ending changes."""
        command = Command.BDAT_LAST if last else Command.BDAT
        self._check_can_send(command)
        if not self.supports("CHUNKING"):
            raise _misuse("the server does not offer CHUNKING: send the message with data()")
        self._queue(command, f"BDAT {len(chunk)}{' LAST' if last else ''}", payload=chunk)

    def auth(self, mechanism: str, initial_response: str | None = None) -> None:
        """AUTH (RFC 4954 4) with an optional base64 initial response ("=" for an empty one). A 334 reply
        asks for ``auth_response``; 235 ends the exchange. Only for a mechanism the server offered."""
        self._check_can_send(Command.AUTH)
        offered = self._extensions.get("AUTH", "").upper().split()
        if mechanism.upper() not in offered:
            raise _misuse(f"the server does not offer AUTH {mechanism}")
        argument = "" if initial_response is None else f" {initial_response or '='}"
        self._check_sasl_text(argument)
        self._queue(Command.AUTH, f"AUTH {mechanism.upper()}{argument}")

    def auth_response(self, response: str) -> None:
        """The base64 answer to a 334 challenge (or "*" to cancel)."""
        if self._awaited or not self._sasl_pending:
            raise _misuse("auth_response() answers a 334 reply to AUTH")
        self._check_sasl_text(response)
        self._sasl_pending = False
        self._queue(Command.AUTH, response)

    @staticmethod
    def _check_sasl_text(text: str) -> None:
        if not text.isascii() or "\r" in text or "\n" in text:
            raise _misuse("AUTH arguments are base64 text on one line")

    def rset(self) -> None:
        self._check_can_send(Command.RSET)
        self._queue(Command.RSET, "RSET")

    def noop(self) -> None:
        self._check_can_send(Command.NOOP)
        self._queue(Command.NOOP, "NOOP")

    def quit(self) -> None:
        self._check_can_send(Command.QUIT)
        self._queue(Command.QUIT, "QUIT")

    # --- sequence and queueing ------------------------------------------------------------------------

    def _check_can_send(self, command: Command) -> None:
        if self._awaited:
            pending = self._awaited[-1].command
            if pending in GROUP_ENDERS:  # RFC 2920 3.1
                raise _misuse(f"{command.name} given before the reply to {pending.name} was read")
            if not self.supports("PIPELINING"):
                raise _misuse(f"{command.name} given before the reply to {pending.name}: no PIPELINING")
        if command not in SENDABLE[self._projected]:
            if self._projected is ClientState.CLOSED:
                raise _misuse(f"{command.name} on a closed connection")
            raise _misuse(f"{command.name} is out of sequence in state {self._projected.name}")

    def _queue(
        self, command: Command, line: str, *, recipient: Address | None = None, payload: bytes = b""
    ) -> None:
        self._outgoing += line.encode("utf-8") + b"\r\n"
        self._outgoing += payload
        self._await(_Awaited(command, recipient))

    def _await(self, awaited: _Awaited) -> None:
        self._awaited.append(awaited)
        self._projected = next_state(self._projected, awaited.command, accepted=True)

    # --- parameters and paths -------------------------------------------------------------------------

    def _mail_params(self, *, size: int | None, body: str | None, smtputf8: bool) -> dict[str, str | None]:
        params: dict[str, str | None] = {}
        if size is not None:
            limit = self.max_size
            if size < 0:
                raise _misuse("SIZE must not be negative")
            if limit is not None and size > limit:  # RFC 1870 6.1: a permanent failure for this server
                raise LocalProtocolError(
                    replies.REMOTE_MESSAGE_TOO_BIG, reason=f"message of {size} octets over SIZE {limit}"
                )
            if self.supports("SIZE"):
                params["SIZE"] = str(size)
        if body is not None:
            kind = body.upper()
            if kind not in _BODY_TYPES:
                raise _misuse(f"BODY must be 7BIT, 8BITMIME or BINARYMIME, not {body!r}")
            if kind == "8BITMIME" and not self.supports("8BITMIME"):  # RFC 6152 3
                raise LocalProtocolError(replies.REMOTE_NO_8BITMIME, reason="8BITMIME not offered")
            if kind == "BINARYMIME" and not (self.supports("BINARYMIME") and self.supports("CHUNKING")):
                raise LocalProtocolError(replies.REMOTE_NO_BINARYMIME, reason="BINARYMIME not offered")
            if kind != "7BIT" or self.supports("8BITMIME"):
                params["BODY"] = kind
        if smtputf8:
            if not self.supports("SMTPUTF8"):  # RFC 6531 3.4
                raise LocalProtocolError(replies.REMOTE_NO_SMTPUTF8, reason="SMTPUTF8 not offered")
            params["SMTPUTF8"] = None
        return params

    def _extra_params(
        self, extra: Mapping[str, str | None], *, reserved: frozenset[str]
    ) -> dict[str, str | None]:
        """``extra`` checked against the esmtp-param grammar (RFC 5321 4.1.2), so nothing can be injected."""
        if not extra:
            return {}
        if not self._extended:  # RFC 5321 2.2.1: no extensions after HELO
            raise _misuse("MAIL/RCPT parameters need a server greeted with EHLO")
        try:
            params = parse_params(_format_params(extra).lstrip(" "))
        except RemoteProtocolError as error:
            raise _misuse(f"bad MAIL/RCPT parameter: {error.reason}") from None
        if len(params) != len(extra) or any(
            params.get(key.upper(), "") != value for key, value in extra.items()
        ):
            raise _misuse("bad MAIL/RCPT parameter: a keyword or value outside the grammar")
        clash = reserved & params.keys()
        if clash:
            raise _misuse(f"set {', '.join(sorted(clash))} through mail()'s own arguments")
        return params

    @staticmethod
    def _path(address: Address, *, smtputf8: bool, postmaster: bool) -> str:
        """The address as written between "<" and ">", checked by parsing it back with the server's
        grammar: an address that would not survive the round trip (CR, LF, too long ...) is refused."""
        if address.needs_smtputf8 and not smtputf8:  # RFC 6531 3.4
            raise _misuse(f"non-ASCII address {address} needs mail(..., smtputf8=True)")
        text = address.local_part if postmaster and not address.domain else str(address)
        try:
            parsed, _route, rest = parse_path(
                f"<{text}>", bad=replies.BAD_RECIPIENT_ADDRESS, postmaster=postmaster
            )
        except RemoteProtocolError as error:
            raise _misuse(f"address {text!r} cannot be sent: {error.reason}") from None
        same = parsed == address or (parsed == Address("Postmaster", "") and not address.domain)
        if not same or rest:
            raise _misuse(f"address {text!r} does not read back as itself")
        return text

    # --- replies and transitions ----------------------------------------------------------------------

    def _apply(self, awaited: _Awaited, reply: Reply) -> None:
        command = awaited.command
        if reply.code == 421:  # RFC 5321 3.8: the server is closing, whatever it was answering
            self._close()
            return
        positive, klass = POSITIVE_CLASS[command], reply.code // 100
        if command is Command.AUTH and reply.code == 334:  # RFC 4954 4: a challenge; state stays
            self._sasl_pending = True
            return
        self._sasl_pending = False
        if klass < 4 and klass != positive:
            self._close()
            raise _malformed(f"{reply.code} is not an answer to {command.name}")
        accepted = klass == positive
        state = next_state(self._state, command, accepted=accepted)
        if accepted and command is Command.EHLO:
            self._extended, self._extensions = True, _parse_extensions(reply)
        elif accepted and command is Command.HELO:
            self._extended, self._extensions = False, {}
        elif accepted and command is Command.RCPT and awaited.recipient is not None:
            self._recipients.append(awaited.recipient)
        self._enter(state)
        if not accepted:  # the projection assumed success: redo it from where we really are
            self._projected = project(state, (pending.command for pending in self._awaited))

    def _enter(self, state: ClientState) -> None:
        if state is self._state:
            return
        if state not in TRANSACTION_STATES:
            self._recipients.clear()
        self._stuffer = DotStuffer() if state is ClientState.DATA else None
        if state is ClientState.TLS_PENDING:
            self._reader.clear()  # nothing read before the handshake may count after it (RFC 3207 6)
        self._state = state

    def _close(self) -> None:
        self._awaited.clear()
        self._outgoing.clear()
        self._reader.clear()
        self._projected = ClientState.CLOSED
        self._enter(ClientState.CLOSED)
