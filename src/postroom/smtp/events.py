"""Events the server-side protocol emits: one per client command, plus message data. Frozen values.

Every event except ``Bdat`` and ``DataChunk`` needs exactly one reply, given back through
``ServerConnection.send(reply)`` before the next event can be read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from postroom.smtp.types import Address, Reply

__all__ = [
    "NEED_DATA",
    "Auth",
    "AuthResponse",
    "Bdat",
    "CommandError",
    "Data",
    "DataChunk",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "Event",
    "Help",
    "Mail",
    "NeedData",
    "Noop",
    "Quit",
    "Rcpt",
    "Rset",
    "StartTls",
    "Vrfy",
]


class NeedData(Enum):
    """Sentinel: the protocol needs more bytes before it can emit another event."""

    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events."""


@dataclass(frozen=True, slots=True)
class Ehlo(Event):
    """EHLO (extended=True) or HELO (extended=False) with the client's domain or address literal."""

    domain: str
    extended: bool


@dataclass(frozen=True, slots=True)
class Mail(Event):
    """MAIL FROM. ``reverse_path`` is None for the null sender ``<>``."""

    reverse_path: Address | None
    params: Mapping[str, str | None] = field(default_factory=dict)
    size: int | None = None  # SIZE= (RFC 1870), validated
    body: str | None = None  # BODY= 7BIT | 8BITMIME | BINARYMIME, upper-cased
    smtputf8: bool = False  # SMTPUTF8 (RFC 6531)
    ret: str | None = None  # RET= FULL | HDRS (RFC 3461 4.3), upper-cased
    envid: str | None = None  # ENVID= (RFC 3461 4.4), xtext-decoded


@dataclass(frozen=True, slots=True)
class Rcpt(Event):
    """RCPT TO. A bare ``<Postmaster>`` arrives as Address("Postmaster", "")."""

    forward_path: Address
    params: Mapping[str, str | None] = field(default_factory=dict)
    source_route: tuple[str, ...] = ()  # RFC 5321 4.1.2: accepted, recorded, never used for routing
    notify: tuple[str, ...] | None = None  # NOTIFY= (RFC 3461 4.1): ("NEVER",) or of SUCCESS, FAILURE, DELAY
    orcpt: tuple[str, str] | None = None  # ORCPT= (RFC 3461 4.2): (address type, xtext-decoded address)


@dataclass(frozen=True, slots=True)
class Data(Event):
    """DATA, in a valid sequence. Answer 354 (replies.START_DATA) to receive the body, or refuse."""


@dataclass(frozen=True, slots=True)
class Bdat(Event):
    """BDAT command line (RFC 3030). Needs no reply: its ``size`` octets follow as DataChunk events, then an
    EndOfChunk, which is answered."""

    size: int
    last: bool


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Message bytes, dot-unstuffed, CRLF line endings kept (or normalised, per settings). Needs no reply.

    ``crlf_only`` is a hint, not part of the value: True when every CR and LF in ``data`` belongs to a CRLF
    pair (the DATA reader counted them anyway), so a consumer that turns CRLF into LF can just drop the CRs.
    BDAT octets are never looked at, so they say False.
    """

    data: bytes
    crlf_only: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class EndOfData(Event):
    """The DATA body ended with CRLF.CRLF. ``problem`` is set when the message must be refused (bare line
    endings, over-long lines, too big); the session then answers with it instead of queueing."""

    size: int
    problem: Reply | None = None


@dataclass(frozen=True, slots=True)
class EndOfChunk(Event):
    """One BDAT chunk fully received. Answer replies.CHUNK_OK, or (when ``last``) the queueing result."""

    size: int  # total message size so far
    last: bool
    problem: Reply | None = None


@dataclass(frozen=True, slots=True)
class Rset(Event):
    """RSET."""


@dataclass(frozen=True, slots=True)
class Noop(Event):
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT."""


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    """VRFY. Answer 252 (replies.VRFY_CANNOT): we never reveal whether a mailbox exists."""

    argument: str


@dataclass(frozen=True, slots=True)
class Help(Event):
    """HELP [topic]."""

    topic: str | None = None


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """STARTTLS (only when offered). Answer replies.START_TLS_READY and then do the handshake."""


@dataclass(frozen=True, slots=True)
class Auth(Event):
    """AUTH mechanism [initial-response] (only when offered)."""

    mechanism: str
    initial_response: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """A client's answer to a 334 SASL challenge (RFC 4954 4): base64 text, or "" for an empty one.
    A client's "*" (cancel) never arrives here: the protocol answers it with 501 itself."""

    response: str


@dataclass(frozen=True, slots=True)
class CommandError(Event):
    """The protocol refused what the client sent; answer with ``reply`` (it may be a 421 that closes)."""

    reply: Reply
    reason: str = ""
