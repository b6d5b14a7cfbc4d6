"""xtext (RFC 3461 4), the encoding of DSN parameter values (ENVID, ORCPT): decode, encode. Pure functions.

xtext = *( xchar / hexchar ); xchar is any printable ASCII character but "+" and "="; hexchar is "+" and two
upper-case hex digits. Decoded values are kept only when they are printable ASCII (as Postfix does), so
they can go into DSN fields and back on the wire without further checks.
"""

from __future__ import annotations

import re

__all__ = ["decode_xtext", "encode_xtext"]

_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")


def decode_xtext(text: str) -> str | None:
    """The decoded value, or None when ``text`` is not xtext or decodes to anything but printable ASCII
    (space included)."""
    if not _XTEXT.fullmatch(text):
        return None
    decoded = _HEXCHAR.sub(lambda match: chr(int(match.group(1), 16)), text)
    if not all(" " <= char <= "~" for char in decoded):
        return None
    return decoded


def encode_xtext(value: str) -> str:
    """``value`` (printable ASCII) as xtext: "+", "=" and anything outside "!".."~" become "+XX"."""
    return "".join(char if "!" <= char <= "~" and char not in "+=" else f"+{ord(char):02X}" for char in value)
