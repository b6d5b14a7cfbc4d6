"""The server's per-verb rules: one command line, with what the conversation knows so far, to one event.

Everything here is a pure function of its arguments; ``server.py`` frames the line, takes a ``Conversation``
snapshot, and keeps BDAT (whose octets follow the command line) and the hang-up on HTTP requests itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from postroom.smtp import replies
from postroom.smtp.events import (
    CommandError,
    Data,
    Event,
    Help,
    Mail,
    Noop,
    Quit,
    Rset,
    StartTls,
    Vrfy,
)
from postroom.smtp.grammar import parse_auth, parse_helo, parse_mail, parse_rcpt
from postroom.smtp.server_settings import ServerSettings
from postroom.smtp.states import SEQUENCE_ERRORS, ServerState, Step

__all__ = ["Conversation", "decode_command", "parse_command"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Conversation:
    """What the per-verb rules need to know about the conversation, taken once per command line."""

    settings: ServerSettings
    state: ServerState
    tls: bool
    extended: bool  # the last accepted greeting was EHLO, not HELO
    authenticated: bool
    mail: Mail | None  # the transaction's accepted MAIL
    recipients: int  # recipients accepted in the transaction


def decode_command(line: bytes) -> tuple[str, str] | CommandError:
    """Split a command line (without its CRLF) into its upper-cased verb and its arguments."""
    if b"\0" in line:
        return CommandError(replies.NUL_IN_COMMAND, reason="NUL in command line")
    if b"\r" in line:
        return CommandError(replies.BARE_LF_IN_COMMAND, reason="bare CR in command line")
    try:
        text = line.decode("ascii") if line.isascii() else line.decode("utf-8")
    except UnicodeDecodeError:
        return CommandError(replies.NON_ASCII_COMMAND, reason="command line is not UTF-8")
    verb, _, args = text.partition(" ")
    return verb.upper(), args


def parse_command(verb: str, args: str, conversation: Conversation) -> Event:
    """The event for one command other than BDAT; raises RemoteProtocolError where the grammar refuses it."""
    rule = _RULES.get(verb) if verb.isascii() else None
    if rule is None:
        return CommandError(replies.SYNTAX_ERROR, reason="unknown command")
    return rule(args, conversation)


def _refusal(conversation: Conversation, step: Step) -> CommandError | None:
    reply = SEQUENCE_ERRORS.get(conversation.state, {}).get(step)
    return None if reply is None else CommandError(reply, reason=f"{step.name} out of sequence")


def _ehlo(args: str, conversation: Conversation) -> Event:
    return _refusal(conversation, Step.EHLO) or parse_helo(args, extended=True)


def _helo(args: str, conversation: Conversation) -> Event:
    return _refusal(conversation, Step.EHLO) or parse_helo(args, extended=False)


def _mail(args: str, conversation: Conversation) -> Event:
    refusal = _refusal(conversation, Step.MAIL)
    if refusal is not None:
        return refusal
    mail = parse_mail(args)
    limit = conversation.settings.max_message_size
    if mail.params and not conversation.extended:  # RFC 5321 4.1.1.11 / 2.2.1: parameters need EHLO
        return CommandError(replies.UNKNOWN_PARAMETER, reason="MAIL parameters after HELO")
    if mail.size is not None and limit and mail.size > limit:  # RFC 1870 6.1
        return CommandError(replies.MESSAGE_TOO_BIG, reason=f"declared SIZE {mail.size} over {limit}")
    if mail.body == "BINARYMIME" and not conversation.settings.chunking:
        return CommandError(replies.BAD_BODY_PARAMETER, reason="BINARYMIME without CHUNKING")
    if not args.isascii() and not mail.smtputf8:  # RFC 6531 3.4
        return CommandError(replies.SMTPUTF8_REQUIRED, reason="UTF-8 in MAIL without SMTPUTF8")
    return mail


def _rcpt(args: str, conversation: Conversation) -> Event:
    refusal = _refusal(conversation, Step.RCPT)
    if refusal is not None:
        return refusal
    if conversation.recipients >= conversation.settings.max_recipients:  # RFC 5321 4.5.3.1.10
        return CommandError(replies.TOO_MANY_RECIPIENTS, reason="recipient limit reached")
    rcpt = parse_rcpt(args)
    mail = conversation.mail
    if not args.isascii() and not (mail is not None and mail.smtputf8):
        return CommandError(replies.SMTPUTF8_REQUIRED, reason="UTF-8 in RCPT without SMTPUTF8")
    return rcpt


def _data(args: str, conversation: Conversation) -> Event:
    refusal = _refusal(conversation, Step.DATA)
    if refusal is not None:
        return refusal
    if args.strip(" "):
        return CommandError(replies.NO_ARGUMENTS_ALLOWED, reason="DATA with arguments")
    if conversation.mail is not None and conversation.mail.body == "BINARYMIME":  # RFC 3030 3
        return CommandError(replies.BINARYMIME_NEEDS_BDAT, reason="DATA after BODY=BINARYMIME")
    return Data()


def _rset(args: str, conversation: Conversation) -> Event:
    if args.strip(" "):
        return CommandError(replies.NO_ARGUMENTS_ALLOWED, reason="RSET with arguments")
    return _refusal(conversation, Step.RSET) or Rset()


def _noop(args: str, conversation: Conversation) -> Event:
    return _refusal(conversation, Step.NOOP) or Noop()  # RFC 5321 4.1.1.9: the argument is ignored


def _quit(args: str, conversation: Conversation) -> Event:
    if args.strip(" "):
        return CommandError(replies.NO_ARGUMENTS_ALLOWED, reason="QUIT with arguments")
    return Quit()


def _vrfy(args: str, conversation: Conversation) -> Event:
    refusal = _refusal(conversation, Step.VRFY)
    if refusal is not None:
        return refusal
    argument = args.strip(" ")
    if not argument:
        return CommandError(replies.PARAMETER_SYNTAX, reason="VRFY without an argument")
    return Vrfy(argument)


def _help(args: str, conversation: Conversation) -> Event:
    return _refusal(conversation, Step.HELP) or Help(args.strip(" ") or None)


def _expn(args: str, conversation: Conversation) -> Event:
    return CommandError(replies.NOT_IMPLEMENTED, reason="EXPN is not offered")


def _starttls(args: str, conversation: Conversation) -> Event:
    if not conversation.settings.starttls:
        return CommandError(replies.NOT_IMPLEMENTED, reason="STARTTLS is not offered")
    if conversation.tls:
        return CommandError(replies.BAD_SEQUENCE, reason="TLS is already active")
    refusal = _refusal(conversation, Step.STARTTLS)
    if refusal is not None:
        return refusal
    if args.strip(" "):  # RFC 3207 4: 501 Syntax error (no parameters allowed)
        return CommandError(replies.NO_ARGUMENTS_ALLOWED, reason="STARTTLS with arguments")
    return StartTls()


def _auth(args: str, conversation: Conversation) -> Event:
    settings = conversation.settings
    if not settings.auth_mechanisms:
        return CommandError(replies.NOT_IMPLEMENTED, reason="AUTH is not offered")
    if not settings.auth_offered(tls=conversation.tls):  # RFC 4954 4 / RFC 3207 6: no plaintext passwords
        return CommandError(replies.ENCRYPTION_REQUIRED, reason="AUTH before STARTTLS")
    refusal = _refusal(conversation, Step.AUTH)
    if refusal is not None:
        return refusal
    if conversation.authenticated:  # RFC 4954 4: once authenticated, AUTH may not be repeated
        return CommandError(replies.ALREADY_AUTHENTICATED, reason="AUTH after successful AUTH")
    auth = parse_auth(args)
    if auth.mechanism not in (mechanism.upper() for mechanism in settings.auth_mechanisms):
        return CommandError(replies.AUTH_MECHANISM_UNKNOWN, reason=f"mechanism {auth.mechanism}")
    return auth


_RULES: dict[str, Callable[[str, Conversation], Event]] = {
    "EHLO": _ehlo, "HELO": _helo, "MAIL": _mail, "RCPT": _rcpt, "DATA": _data, "RSET": _rset, "NOOP": _noop,
    "QUIT": _quit, "VRFY": _vrfy, "HELP": _help, "EXPN": _expn, "STARTTLS": _starttls, "AUTH": _auth,
}  # fmt: skip
