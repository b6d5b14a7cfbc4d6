"""SMTP command-argument grammar (RFC 5321 4.1, RFC 6531): paths, domains, parameters, per-verb arguments.

Pure functions from the decoded argument text of one command line to an event, raising
``RemoteProtocolError`` (carrying the reply from the catalogue) for anything the client got wrong. It does not
know the connection's state or settings: whether a command is allowed now, whether an extension was offered,
whether SMTPUTF8 was asked for, and size limits are decided in ``server.py``. UTF-8 is accepted wherever RFC
6531 allows it; the caller refuses it when the transaction did not ask for SMTPUTF8. U-labels are checked for
their shape (no ASCII other than letters, digits and inner hyphens), not against IDNA tables.
"""

from __future__ import annotations

import ipaddress
import re

from postroom.smtp import replies
from postroom.smtp.errors import RemoteProtocolError
from postroom.smtp.events import Auth, Bdat, Ehlo, Mail, Rcpt
from postroom.smtp.types import Address, Reply
from postroom.smtp.xtext import decode_xtext

__all__ = [
    "is_domain",
    "parse_address_literal",
    "parse_auth",
    "parse_bdat",
    "parse_helo",
    "parse_mail",
    "parse_params",
    "parse_path",
    "parse_rcpt",
]

# RFC 5321 4.1.2 atext (RFC 5322 3.2.3), widened by RFC 6531 3.3 to any UTF-8 non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_UTF8 = "\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}{_UTF8}]+(?:\.[{_ATEXT}{_UTF8}]+)*")
# qtextSMTP (%d32-33 / %d35-91 / %d93-126, plus UTF-8) and quoted-pairSMTP (backslash %d32-126).
_QUOTED_CONTENT = re.compile(rf"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*")
_QUOTED_PAIR = re.compile(r"\\([\x20-\x7e])")
# sub-domain = Let-dig [Ldh-str] (4.1.2), a U-label allowed in its place (RFC 6531 3.3).
_LABEL = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}\-]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ASCII_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
_ASCII_DOT_STRING = rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*"
# The common case in one match: "<dot-atom@ldh.domain>" followed by the end or a space.
_SIMPLE_PATH = re.compile(rf"<({_ASCII_DOT_STRING})@({_ASCII_LABEL}(?:\.{_ASCII_LABEL})*)>(?: |\Z)")
# esmtp-keyword and esmtp-value (4.1.2; RFC 6531 3.3 allows UTF-8 in values).
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_UTF8}]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_SASL_MECHANISM = re.compile(r"[A-Za-z0-9_\-]{1,20}")  # RFC 4422 3.1
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

# RFC 5321 4.5.3.1.1-3: local part 64 octets, domain 255 octets, path 256 octets with its punctuation.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
_MAX_LABEL = 63
_BODY_TYPES = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})
# RFC 3461: NOTIFY's keywords in the order they are kept; ENVID at most 100 characters (4.4); ORCPT's
# addr-type is an atom (4.2), its address at most 500 characters as sent.
_NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")
_MAX_ENVID = 100
_MAX_ORCPT = 500
_ADDRESS_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]{0,31}")


def _fail(reply: Reply, reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reply, reason=reason)


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def is_domain(text: str) -> bool:
    """A domain name: LDH labels (or U-labels) of at most 63 octets, 255 in all, no trailing dot."""
    if not _DOMAIN.fullmatch(text) or _octets(text) > MAX_DOMAIN:
        return False
    return all(len(label) <= _MAX_LABEL for label in text.split(".") if label.isascii())


def parse_address_literal(text: str) -> str | None:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 4.1.3) as given, or None if it is not one.

    General address literals (other tags) are not accepted: nothing could deliver to them.
    """
    if len(text) < 3 or text[0] != "[" or text[-1] != "]":
        return None
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            if "%" in inner:  # a zone index is not part of the grammar
                return None
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return None
    return text


def _domain_or_literal(text: str) -> bool:
    return parse_address_literal(text) is not None if text.startswith("[") else is_domain(text)


def _split_path(text: str, bad: Reply) -> tuple[str, str]:
    """Split "<...> rest" at the closing bracket (not one inside a quoted local part)."""
    if '"' not in text:
        close = text.find(">")
    else:
        close, quoted, escaped = -1, False, False
        for index, char in enumerate(text):
            if escaped:
                escaped = False
            elif quoted and char == "\\":
                escaped = True
            elif char == '"':
                quoted = not quoted
            elif char == ">" and not quoted:
                close = index
                break
    if close < 0:
        raise _fail(bad, "path without a closing '>'")
    rest = text[close + 1 :]
    if rest and rest[0] != " ":
        raise _fail(bad, "text after the path without a space")
    return text[1:close], rest.lstrip(" ")


def _parse_local_part(text: str, bad: Reply) -> str:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"') or not _QUOTED_CONTENT.fullmatch(text, 1, len(text) - 1):
            raise _fail(bad, "bad quoted local part")
        local = _QUOTED_PAIR.sub(r"\1", text[1:-1])
    elif _DOT_STRING.fullmatch(text):
        local = text
    else:
        raise _fail(bad, "bad local part")
    if not local:
        raise _fail(bad, "empty local part")  # RFC 5321 4.1.2 grammar allows "", nothing can deliver to it
    if _octets(text) > MAX_LOCAL_PART:
        raise _fail(replies.ADDRESS_TOO_LONG, "local part over 64 octets")
    return local


def _parse_route(text: str, bad: Reply) -> tuple[str, ...]:
    """A-d-l = At-domain *( "," At-domain ) (RFC 5321 4.1.2); kept, never used (RFC 5321 C)."""
    route = []
    for hop in text.split(","):
        if not hop.startswith("@") or not is_domain(hop[1:]):
            raise _fail(bad, "bad source route")
        route.append(hop[1:])
    return tuple(route)


def parse_path(
    text: str, *, bad: Reply, postmaster: bool = False
) -> tuple[Address | None, tuple[str, ...], str]:
    """Parse "<path> params" into (address or None for "<>", source route, parameter text).

    ``bad`` is the reply for a malformed address. With ``postmaster``, a bare ``<Postmaster>`` (any case) is
    Address("Postmaster", "") (RFC 5321 4.1.1.3).
    """
    simple = _SIMPLE_PATH.match(text)
    if simple is not None:
        local, domain = simple.group(1), simple.group(2)
        if simple.end(2) + 1 > MAX_PATH or len(local) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN:
            raise _fail(replies.ADDRESS_TOO_LONG, "path too long")
        return Address(local, domain), (), text[simple.end() :].lstrip(" ")
    if not text.startswith("<"):
        raise _fail(bad, "path without '<'")
    inner, rest = _split_path(text, bad)
    if _octets(inner) + 2 > MAX_PATH:
        raise _fail(replies.ADDRESS_TOO_LONG, "path over 256 octets")
    if not inner:
        return None, (), rest
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        colon = inner.find(":")
        if colon < 0:
            raise _fail(bad, "source route without ':'")
        route, inner = _parse_route(inner[:colon], bad), inner[colon + 1 :]
    at = inner.rfind("@")
    if at < 0:
        if postmaster and not route and inner.lower() == "postmaster":
            return Address("Postmaster", ""), (), rest
        raise _fail(bad, "address without '@'")
    local, domain = _parse_local_part(inner[:at], bad), inner[at + 1 :]
    if _octets(domain) > MAX_DOMAIN:
        raise _fail(replies.ADDRESS_TOO_LONG, "domain over 255 octets")
    if not _domain_or_literal(domain):
        raise _fail(bad, "bad domain")
    return Address(local, domain), route, rest


def parse_params(text: str) -> dict[str, str | None]:
    """esmtp-param *(SP esmtp-param): keys upper-cased; a key without "=" maps to None; no duplicates."""
    params: dict[str, str | None] = {}
    for item in text.split(" "):
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not _KEYWORD.fullmatch(key) or (equals and not _VALUE.fullmatch(value)):
            raise _fail(replies.PARAMETER_SYNTAX, "bad parameter syntax")
        key = key.upper()
        if key in params:
            raise _fail(replies.PARAMETER_SYNTAX, f"duplicate parameter {key}")
        params[key] = value if equals else None
    return params


def _after_prefix(args: str, prefix: str, syntax: Reply) -> str:
    # RFC 5321 4.1.1.2 has no space after the colon; many clients send one, so one is tolerated.
    if args[: len(prefix)].upper() != prefix:
        raise _fail(syntax, f"expected {prefix}")
    rest = args[len(prefix) :]
    return rest[1:] if rest.startswith(" ") else rest


def _parse_ret(value: str | None) -> str:
    if value is None or value.upper() not in ("FULL", "HDRS"):
        raise _fail(replies.BAD_RET_PARAMETER, "RET is not FULL or HDRS")
    return value.upper()


def _parse_envid(value: str | None) -> str:
    decoded = None if value is None else decode_xtext(value)
    if decoded is None or not decoded or len(decoded) > _MAX_ENVID:
        raise _fail(replies.BAD_ENVID_PARAMETER, "ENVID is not xtext of 1 to 100 characters")
    return decoded


def _parse_notify(value: str | None) -> tuple[str, ...]:
    """NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 4.1), in a canonical order."""
    words = [] if value is None else [word.upper() for word in value.split(",")]
    if words == ["NEVER"]:
        return ("NEVER",)
    if not words or len(set(words)) != len(words) or not set(words) <= set(_NOTIFY_ORDER):
        raise _fail(replies.BAD_NOTIFY_PARAMETER, "NOTIFY is not NEVER or a list of SUCCESS, FAILURE, DELAY")
    return tuple(word for word in _NOTIFY_ORDER if word in words)


def _parse_orcpt(value: str | None) -> tuple[str, str]:
    """ORCPT=addr-type;xtext (RFC 3461 4.2): (address type lower-cased, the decoded address)."""
    kind, semicolon, text = (value or "").partition(";")
    address = decode_xtext(text) if semicolon and len(text) <= _MAX_ORCPT else None
    if not _ADDRESS_TYPE.fullmatch(kind) or not address:
        raise _fail(replies.BAD_ORCPT_PARAMETER, "ORCPT is not addr-type;xtext")
    return kind.lower(), address


def parse_mail(args: str) -> Mail:
    """``FROM:<reverse-path> [params]``: SIZE (RFC 1870), BODY (RFC 6152, 3030), SMTPUTF8 (RFC 6531), AUTH
    (RFC 4954 5, accepted and ignored), RET and ENVID (RFC 3461). Any other parameter is 555."""
    path = _after_prefix(args, "FROM:", replies.MAIL_SYNTAX)
    if not path.startswith("<"):
        raise _fail(replies.MAIL_SYNTAX, "reverse path without '<'")
    sender, _route, rest = parse_path(path, bad=replies.BAD_SENDER_ADDRESS)
    params = parse_params(rest) if rest else {}
    size: int | None = None
    body: str | None = None
    ret: str | None = None
    envid: str | None = None
    for key, value in params.items():
        if key == "SIZE":
            if value is None or not _DIGITS.fullmatch(value):
                raise _fail(replies.BAD_SIZE_PARAMETER, "SIZE is not a decimal number")
            size = int(value)
        elif key == "BODY":
            if value is None or value.upper() not in _BODY_TYPES:
                raise _fail(replies.BAD_BODY_PARAMETER, "unknown BODY type")
            body = value.upper()
        elif key == "RET":
            ret = _parse_ret(value)
        elif key == "ENVID":
            envid = _parse_envid(value)
        elif (key == "SMTPUTF8" and value is None) or (key == "AUTH" and value is not None):
            pass  # SMTPUTF8 is read below; AUTH= (RFC 4954 5) is accepted and ignored
        elif key in ("SMTPUTF8", "AUTH"):
            raise _fail(replies.PARAMETER_SYNTAX, f"bad {key} parameter")
        else:
            raise _fail(replies.UNKNOWN_PARAMETER, f"unknown MAIL parameter {key}")
    return Mail(sender, params, size=size, body=body, smtputf8="SMTPUTF8" in params, ret=ret, envid=envid)


def parse_rcpt(args: str) -> Rcpt:
    """``TO:<forward-path> [params]``: NOTIFY and ORCPT (RFC 3461); any other parameter is 555."""
    path = _after_prefix(args, "TO:", replies.RCPT_SYNTAX)
    if not path.startswith("<"):
        raise _fail(replies.RCPT_SYNTAX, "forward path without '<'")
    recipient, route, rest = parse_path(path, bad=replies.BAD_RECIPIENT_ADDRESS, postmaster=True)
    if recipient is None:
        raise _fail(replies.BAD_RECIPIENT_ADDRESS, "null forward path")
    params = parse_params(rest) if rest else {}
    notify: tuple[str, ...] | None = None
    orcpt: tuple[str, str] | None = None
    for key, value in params.items():
        if key == "NOTIFY":
            notify = _parse_notify(value)
        elif key == "ORCPT":
            orcpt = _parse_orcpt(value)
        else:
            raise _fail(replies.UNKNOWN_PARAMETER, f"unknown RCPT parameter {key}")
    return Rcpt(recipient, params, source_route=route, notify=notify, orcpt=orcpt)


def parse_helo(args: str, *, extended: bool) -> Ehlo:
    """``EHLO domain`` / ``HELO domain``: a domain name or an address literal (RFC 5321 4.1.1.1)."""
    domain = args.strip(" ")
    if not domain or not _domain_or_literal(domain):
        raise _fail(replies.HELO_SYNTAX, "EHLO/HELO argument is not a domain or address literal")
    return Ehlo(domain, extended)


def parse_bdat(args: str) -> Bdat:
    """``BDAT chunk-size [LAST]`` (RFC 3030 2)."""
    words = args.strip(" ").split(" ")
    if not 1 <= len(words) <= 2 or not _DIGITS.fullmatch(words[0]):
        raise _fail(replies.BDAT_SYNTAX, "bad BDAT arguments")
    if len(words) == 2 and words[1].upper() != "LAST":
        raise _fail(replies.BDAT_SYNTAX, "BDAT end marker is not LAST")
    return Bdat(int(words[0]), len(words) == 2)


def parse_auth(args: str) -> Auth:
    """``AUTH mechanism [initial-response]`` (RFC 4954 4); "=" is an empty initial response, given as ""."""
    words = args.strip(" ").split(" ")
    if not 1 <= len(words) <= 2 or not _SASL_MECHANISM.fullmatch(words[0]):
        raise _fail(replies.PARAMETER_SYNTAX, "bad AUTH arguments")
    if len(words) == 1:
        return Auth(words[0].upper())
    response = words[1]
    if response == "=":
        return Auth(words[0].upper(), "")
    if not response or not _BASE64.fullmatch(response):
        raise _fail(replies.PARAMETER_SYNTAX, "AUTH initial response is not base64")
    return Auth(words[0].upper(), response)
