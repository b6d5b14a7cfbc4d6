"""The server's SMTP states and its transition table, as data. No parsing and no bytes here.

Theory of operation
-------------------
Two rules, as in h11's ``_state.py``:

1. Everything that changes the protocol state is written down in this file, as tables. ``server.py`` looks
   states up here; it never assigns a state that a table does not name (the two exceptions, stated once: any
   421 reply and end of input move to CLOSED from anywhere, RFC 5321 3.8).
2. This file does not know about bytes, grammar or settings. Which extensions are offered, and what a command
   line means, is ``server.py``'s, ``commands.py``'s and ``grammar.py``'s business.

A server conversation is a sequence of *steps*: the greeting, then one client command or one piece of message
data at a time. Every step that needs a reply moves the state when the reply is *sent*, and where it moves
depends on whether the reply accepted the step (2xx/3xx) or refused it (4xx/5xx). Steps that need no reply
(BDAT's command line) move the state when the event is emitted and count as accepted.

    CONNECTED --220--> GREETED --EHLO/HELO--> READY --MAIL--> MAIL --RCPT--> RCPT --DATA (354)--> DATA
    CONNECTED --554--> REFUSED --QUIT--> CLOSED
    DATA --any reply to EndOfData--> READY
    RCPT --BDAT--> BDAT --chunk accepted--> BDAT_READY --BDAT--> BDAT
    BDAT --any reply to the LAST chunk, or a refused chunk--> READY
    READY --STARTTLS (220)--> TLS_PENDING --tls_started()--> GREETED
    MAIL, RCPT, BDAT_READY --EHLO/HELO or RSET--> READY;  any command state --QUIT (221)--> CLOSED

A command that arrives in a state where it makes no sense is refused with the reply in ``SEQUENCE_ERRORS``
(RFC 5321 4.3.2 lists the sequences; 503 for everything out of order). A refusal never changes the state.
States where no command is read (CONNECTED, DATA, BDAT, TLS_PENDING, CLOSED) have no sequence table.
"""

from __future__ import annotations

from enum import Enum

from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = [
    "COMMAND_STATES",
    "SEQUENCE_ERRORS",
    "TRANSACTION_STATES",
    "TRANSITIONS",
    "ServerState",
    "Step",
    "next_state",
]


class ServerState(Enum):
    """Where the server side of one connection stands."""

    CONNECTED = "CONNECTED"  # nothing sent yet: the next send() is the greeting
    GREETED = "GREETED"  # 220 greeting sent (or TLS just started): the client must say EHLO/HELO
    REFUSED = "REFUSED"  # 554 greeting sent: only QUIT is served (RFC 5321 3.1)
    READY = "READY"  # EHLO/HELO accepted, no mail transaction
    MAIL = "MAIL"  # reverse path accepted, no recipient yet
    RCPT = "RCPT"  # at least one recipient accepted
    DATA = "DATA"  # 354 sent: reading the dot-stuffed body
    BDAT = "BDAT"  # reading the octets of one BDAT chunk (RFC 3030)
    BDAT_READY = "BDAT_READY"  # a non-last chunk accepted: only BDAT (or RSET, EHLO, QUIT...) continues
    TLS_PENDING = "TLS_PENDING"  # 220 sent to STARTTLS: waiting for tls_started() (RFC 3207 4.2)
    CLOSED = "CLOSED"  # 221 or 421 sent, or the peer went away

    # Members are singletons compared by identity; Enum's own __hash__ is Python code on every table lookup.
    __hash__ = object.__hash__


class Step(Enum):
    """What happened: a command or a piece of message framing, independent of its arguments."""

    GREETING = "GREETING"
    EHLO = "EHLO"  # EHLO and HELO
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    BDAT = "BDAT"  # the BDAT command line (needs no reply)
    CHUNK = "CHUNK"  # the end of a non-last BDAT chunk
    LAST_CHUNK = "LAST_CHUNK"  # the end of the BDAT chunk marked LAST
    END_OF_DATA = "END_OF_DATA"  # CRLF.CRLF after DATA
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    TLS_STARTED = "TLS_STARTED"  # the TLS handshake finished (not a command: the session reports it)
    AUTH = "AUTH"

    __hash__ = object.__hash__  # as ServerState


S = ServerState


def _any_reply(step: Step, target: ServerState) -> dict[tuple[Step, bool], ServerState]:
    return {(step, True): target, (step, False): target}


# Leaving a transaction the standard ways: EHLO/HELO (RFC 5321 4.1.4: a new EHLO resets the transaction),
# RSET (4.1.1.5), and QUIT.
_RESETS: dict[tuple[Step, bool], ServerState] = {
    (Step.EHLO, True): S.READY,
    (Step.RSET, True): S.READY,
    (Step.QUIT, True): S.CLOSED,
}

# state -> (step, accepted) -> next state. A pair that is not listed leaves the state as it is.
TRANSITIONS: dict[ServerState, dict[tuple[Step, bool], ServerState]] = {
    S.CONNECTED: {(Step.GREETING, True): S.GREETED, (Step.GREETING, False): S.REFUSED},
    S.GREETED: {(Step.EHLO, True): S.READY, (Step.QUIT, True): S.CLOSED},
    S.REFUSED: {(Step.QUIT, True): S.CLOSED},
    S.READY: {**_RESETS, (Step.MAIL, True): S.MAIL, (Step.STARTTLS, True): S.TLS_PENDING},
    S.MAIL: {**_RESETS, (Step.RCPT, True): S.RCPT},
    S.RCPT: {**_RESETS, (Step.DATA, True): S.DATA, (Step.BDAT, True): S.BDAT},
    S.DATA: _any_reply(Step.END_OF_DATA, S.READY),
    # RFC 3030 2: after an error reply to a chunk the client must not send more chunks of the message.
    S.BDAT: {
        (Step.CHUNK, True): S.BDAT_READY,
        (Step.CHUNK, False): S.READY,
        **_any_reply(Step.LAST_CHUNK, S.READY),
    },
    S.BDAT_READY: {**_RESETS, (Step.BDAT, True): S.BDAT},
    S.TLS_PENDING: {(Step.TLS_STARTED, True): S.GREETED},
    S.CLOSED: {},
}

# States in which command lines are read.
COMMAND_STATES = frozenset({S.GREETED, S.REFUSED, S.READY, S.MAIL, S.RCPT, S.BDAT_READY})

# States that hold a mail transaction; leaving them clears it.
TRANSACTION_STATES = frozenset({S.MAIL, S.RCPT, S.DATA, S.BDAT, S.BDAT_READY})

_NEED_HELO = {
    step: replies.NEED_HELO for step in (Step.MAIL, Step.RCPT, Step.DATA, Step.BDAT, Step.STARTTLS, Step.AUTH)
}
# RFC 3207 4 and RFC 4954 4: STARTTLS and AUTH are not allowed inside a mail transaction.
_NOT_IN_TRANSACTION = {Step.STARTTLS: replies.BAD_SEQUENCE, Step.AUTH: replies.BAD_SEQUENCE}

# state -> step -> the reply refusing that command in that state (RFC 5321 4.3.2: 503 for bad sequences).
SEQUENCE_ERRORS: dict[ServerState, dict[Step, Reply]] = {
    S.GREETED: _NEED_HELO,
    # RFC 5321 3.1: after a 554 greeting the server answers everything but QUIT with 503.
    S.REFUSED: {step: replies.BAD_SEQUENCE for step in Step if step is not Step.QUIT},
    S.READY: {Step.RCPT: replies.NEED_MAIL, Step.DATA: replies.NEED_RCPT, Step.BDAT: replies.NEED_RCPT},
    S.MAIL: {
        Step.MAIL: replies.NESTED_MAIL,
        Step.DATA: replies.NEED_RCPT,
        Step.BDAT: replies.NEED_RCPT,
        **_NOT_IN_TRANSACTION,
    },
    S.RCPT: {Step.MAIL: replies.NESTED_MAIL, **_NOT_IN_TRANSACTION},
    # RFC 3030 2: DATA may not follow BDAT in one transaction; recipients come before the first chunk.
    S.BDAT_READY: {
        Step.MAIL: replies.NESTED_MAIL,
        Step.RCPT: replies.BAD_SEQUENCE,
        Step.DATA: replies.DATA_AFTER_BDAT,
        **_NOT_IN_TRANSACTION,
    },
}


def next_state(state: ServerState, step: Step, *, accepted: bool) -> ServerState:
    """The state after ``step`` was answered (accepted: a 2xx/3xx reply) in ``state``."""
    return TRANSITIONS[state].get((step, accepted), state)
