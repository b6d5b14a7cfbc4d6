"""The client's SMTP states and its tables (what may be sent where, where each reply leads), as data.

Theory of operation
-------------------
The same two rules as ``states.py`` (h11's ``_state.py``):

1. Everything that changes the client's state is written down here. ``client.py`` looks states up in
   ``TRANSITIONS``; the exceptions, stated once: a 421 reply, end of input and a malformed reply move to
   CLOSED from anywhere (RFC 5321 3.8), and ``tls_started()`` moves TLS_PENDING to GREETED (RFC 3207 4.2:
   no new greeting comes; the client starts over with EHLO).
2. This file knows nothing of bytes, addresses or extensions: which commands the server offered, and how a
   command is written, are ``client.py``'s business.

Every reply the client reads answers one ``Command`` (the greeting and the end of a DATA body count as
commands here: each gets exactly one reply). ``state`` moves when a reply is *read*, by ``TRANSITIONS``
keyed by (command, accepted), where accepted means the reply's class is the command's positive class
(``POSITIVE_CLASS``: 3 for DATA's 354, 2 for everything else). Where it moves mirrors ``ServerState``:

    GREETING --220--> GREETED --EHLO/HELO 250--> READY --MAIL 250--> MAIL --RCPT 250--> RCPT
    GREETING --554--> REFUSED --QUIT--> CLOSED
    RCPT --DATA 354--> DATA --any reply to the end of data--> READY
    RCPT --BDAT 250--> BDAT --BDAT 250--> BDAT;  RCPT, BDAT --refused BDAT or any reply to BDAT LAST--> READY
    READY --STARTTLS 220--> TLS_PENDING --tls_started()--> GREETED
    MAIL, RCPT, BDAT --RSET 250--> READY;  any state that sends commands --any reply to QUIT--> CLOSED

A refused EHLO leaves the state at GREETED (or READY), so the driver may fall back to HELO (RFC 5321 3.2).
A 354 always leads to DATA, even when we believed no recipient was accepted: the server now reads a body,
and the client must end it (RFC 2920 3.1: "the client SMTP should send a single dot").

Commands are *sent* before their replies are read. With PIPELINING (RFC 2920) several may be in flight, so
whether a command may be sent is judged against the *projected* state: ``state`` advanced through every
command still awaiting its reply, as if each were accepted (``project``). ``SENDABLE`` lists what may be sent
in each projected state. ``GROUP_ENDERS`` are the commands after which nothing may be sent until their reply
is read (RFC 2920 3.1: EHLO, DATA, NOOP and QUIT; RFC 3207 4: STARTTLS; RFC 5321 3.1: nothing before the
greeting). Without PIPELINING, nothing may be sent while any reply is awaited.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

__all__ = [
    "GROUP_ENDERS",
    "POSITIVE_CLASS",
    "SENDABLE",
    "TRANSACTION_STATES",
    "TRANSITIONS",
    "ClientState",
    "Command",
    "next_state",
    "project",
]


class ClientState(Enum):
    """Where the client side of one connection stands, as of the last reply read."""

    GREETING = "GREETING"  # connected: waiting for the server's greeting
    GREETED = "GREETED"  # 220 read (or TLS just started): say EHLO or HELO
    REFUSED = "REFUSED"  # 554 greeting: only QUIT may be sent (RFC 5321 3.1)
    READY = "READY"  # EHLO/HELO accepted, no mail transaction
    MAIL = "MAIL"  # reverse path accepted, no recipient accepted yet
    RCPT = "RCPT"  # at least one recipient accepted
    DATA = "DATA"  # 354 read: sending the body (send_body)
    BDAT = "BDAT"  # a non-last BDAT chunk accepted: only more chunks continue the message (RFC 3030)
    TLS_PENDING = "TLS_PENDING"  # 220 read in reply to STARTTLS: do the handshake, then tls_started()
    CLOSED = "CLOSED"  # QUIT answered, 421 read, the server hung up, or its reply made no sense

    # Members are singletons compared by identity; Enum's own __hash__ is Python code on every table lookup.
    __hash__ = object.__hash__


class Command(Enum):
    """What a reply answers. GREETING and END_OF_DATA are not commands the client types, but each gets a
    reply of its own, so they are tracked the same way."""

    GREETING = "GREETING"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "END_OF_DATA"  # the final "." of a DATA body
    BDAT = "BDAT"  # a chunk not marked LAST
    BDAT_LAST = "BDAT_LAST"  # the chunk marked LAST: its reply is the verdict on the message
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    AUTH = "AUTH"  # AUTH and each SASL response line (RFC 4954): 334 asks for more, 235 ends it

    __hash__ = object.__hash__  # as ClientState


S = ClientState
C = Command

# RFC 5321 4.2.1: the first digit says it all. 3yz is the only positive answer to DATA, 2yz to the others.
POSITIVE_CLASS: dict[Command, int] = {command: 3 if command is C.DATA else 2 for command in Command}

GROUP_ENDERS = frozenset({C.GREETING, C.EHLO, C.HELO, C.STARTTLS, C.DATA, C.NOOP, C.QUIT, C.AUTH})


def _any_reply(command: Command, target: ClientState) -> dict[tuple[Command, bool], ClientState]:
    return {(command, True): target, (command, False): target}


_QUIT = _any_reply(C.QUIT, S.CLOSED)
_GREET = {(C.EHLO, True): S.READY, (C.HELO, True): S.READY}
# RFC 2920 3.1: a 354 means the server reads a body now, whatever we believed about the recipients.
_DATA_ACCEPTED = {(C.DATA, True): S.DATA}
_BDAT = {
    (C.BDAT, True): S.BDAT,
    (C.BDAT, False): S.READY,  # RFC 3030 2: after a refused chunk the transaction is over
    **_any_reply(C.BDAT_LAST, S.READY),
}

# state -> (command, accepted) -> next state. A pair that is not listed leaves the state as it is (a
# pipelined RCPT answered 503 after its MAIL was refused, a refused RSET, a NOOP ...).
TRANSITIONS: dict[ClientState, dict[tuple[Command, bool], ClientState]] = {
    S.GREETING: {(C.GREETING, True): S.GREETED, (C.GREETING, False): S.REFUSED},
    S.GREETED: {**_GREET, **_QUIT},
    S.REFUSED: _QUIT,
    S.READY: {**_GREET, **_QUIT, **_DATA_ACCEPTED, (C.MAIL, True): S.MAIL, (C.STARTTLS, True): S.TLS_PENDING},
    S.MAIL: {
        **_QUIT,
        **_DATA_ACCEPTED,
        (C.RCPT, True): S.RCPT,
        (C.RSET, True): S.READY,
        (C.BDAT, True): S.BDAT,
        (C.BDAT_LAST, True): S.READY,
    },
    S.RCPT: {**_QUIT, **_DATA_ACCEPTED, **_BDAT, (C.RSET, True): S.READY},
    S.DATA: _any_reply(C.END_OF_DATA, S.READY),
    S.BDAT: {**_QUIT, **_BDAT, (C.RSET, True): S.READY},
    S.TLS_PENDING: {},
    S.CLOSED: {},
}

_ANYTIME = frozenset({C.RSET, C.NOOP, C.QUIT})  # RFC 5321 4.1.4: allowed in any command state

# projected state -> the commands that may be sent in it. In DATA nothing is: the body is not a command,
# and send_body() itself checks that the 354 was read (its final chunk awaits END_OF_DATA's reply).
SENDABLE: dict[ClientState, frozenset[Command]] = {
    S.GREETING: frozenset(),
    S.GREETED: _ANYTIME | {C.EHLO, C.HELO},
    S.REFUSED: frozenset({C.QUIT}),
    S.READY: _ANYTIME | {C.EHLO, C.HELO, C.MAIL, C.STARTTLS, C.AUTH},
    S.MAIL: _ANYTIME | {C.RCPT},
    S.RCPT: _ANYTIME | {C.RCPT, C.DATA, C.BDAT, C.BDAT_LAST},
    S.DATA: frozenset(),
    # RFC 3030 2: DATA may not follow BDAT, and recipients come before the first chunk.
    S.BDAT: _ANYTIME | {C.BDAT, C.BDAT_LAST},
    S.TLS_PENDING: frozenset(),
    S.CLOSED: frozenset(),
}

# States that hold a mail transaction; leaving them forgets its recipients.
TRANSACTION_STATES = frozenset({S.MAIL, S.RCPT, S.DATA, S.BDAT})


def next_state(state: ClientState, command: Command, *, accepted: bool) -> ClientState:
    """The state after reading the reply to ``command`` (accepted: of the command's positive class)."""
    return TRANSITIONS[state].get((command, accepted), state)


def project(state: ClientState, commands: Iterable[Command]) -> ClientState:
    """The state once every command in ``commands`` (in order) is answered positively."""
    for command in commands:
        state = next_state(state, command, accepted=True)
    return state
