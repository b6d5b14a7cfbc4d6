"""The server's reply rules: the default reply to each event, the EHLO keywords, which replies fit and count.

Pure functions of an event, a reply and the listener's settings; ``server.py`` holds the state they need.
"""

from __future__ import annotations

from postroom.smtp import replies
from postroom.smtp.errors import LocalProtocolError
from postroom.smtp.events import (
    Auth,
    AuthResponse,
    CommandError,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from postroom.smtp.server_settings import ServerSettings
from postroom.smtp.types import Reply, Status

__all__ = ["check_reply", "counts_as_error", "default_reply", "ehlo_keywords"]

_DEFAULT_REPLIES: dict[type[Event], Reply] = {
    Mail: replies.SENDER_OK, Rcpt: replies.RECIPIENT_OK, Data: replies.START_DATA, Rset: replies.RESET_OK,
    Noop: replies.NOOP_OK, Vrfy: replies.VRFY_CANNOT, Help: replies.HELP, StartTls: replies.START_TLS_READY,
}  # fmt: skip
_TOO_MANY_RECIPIENTS = Status(4, 5, 3)
_POLICY_TEMPORARY = Status(4, 7, 1)


def _misuse(reason: str) -> LocalProtocolError:
    return LocalProtocolError(replies.LOCAL_ERROR, reason=reason)


def ehlo_keywords(settings: ServerSettings, *, tls: bool) -> list[str]:
    """The extensions offered in the EHLO reply, in the order they are listed (RFC 5321 4.1.1.1)."""
    size = settings.max_message_size
    keywords = ["PIPELINING", f"SIZE {size}" if size else "SIZE", "8BITMIME", "SMTPUTF8"]
    keywords += ["ENHANCEDSTATUSCODES", "DSN"]  # DSN: RFC 3461
    if settings.chunking:
        keywords += ["CHUNKING", "BINARYMIME"]
    if settings.starttls and not tls:
        keywords.append("STARTTLS")
    if settings.auth_offered(tls=tls):
        keywords.append("AUTH " + " ".join(settings.auth_mechanisms))
    return keywords


def default_reply(event: Event, settings: ServerSettings, *, tls: bool) -> Reply:
    """The standard positive reply to ``event`` (a CommandError's own reply); raises LocalProtocolError for
    the end of a message, which has none: only the queue can say "queued as"."""
    if isinstance(event, Ehlo):
        name = settings.hostname
        if event.extended:
            return replies.ehlo_ok(name, event.domain, ehlo_keywords(settings, tls=tls))
        return replies.helo_ok(name, event.domain)
    if isinstance(event, CommandError):
        return event.reply
    if isinstance(event, Quit):
        return replies.closing(settings.hostname)
    if isinstance(event, EndOfChunk) and not event.last:
        return event.problem or replies.CHUNK_OK
    reply = _DEFAULT_REPLIES.get(type(event))
    if reply is None:
        raise _misuse(f"no default reply for {type(event).__name__}")
    return reply


def check_reply(event: Event, reply: Reply) -> None:
    """Raise LocalProtocolError if ``reply`` cannot answer ``event``."""
    if reply.code == 334 and not isinstance(event, Auth | AuthResponse):
        raise _misuse("334 answers AUTH and SASL responses only")
    if (reply.code == 354) != (isinstance(event, Data) and reply.is_positive):
        raise _misuse("354 answers DATA, and only 354 accepts it")
    if reply.code == 221 and not isinstance(event, Quit):
        raise _misuse("221 answers QUIT only")
    if reply.is_positive and isinstance(event, CommandError):
        raise _misuse("a CommandError cannot be answered positively")


def counts_as_error(event: Event, reply: Reply) -> bool:
    """``reply`` to ``event`` counts towards the error limit (see server.py's contract for the exceptions)."""
    if reply.is_positive or reply.code == 421 or isinstance(event, (EndOfData, EndOfChunk)):
        return False
    if reply.code == 451 and reply.status == _POLICY_TEMPORARY:
        return False  # greylisting, hourly rates: a verdict on the sender that retrying may lift
    return not (reply.code == 452 and reply.status == _TOO_MANY_RECIPIENTS)
