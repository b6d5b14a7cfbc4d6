"""The message as ``sendmail`` reads it: standard input to CRLF lines (a lone dot may end it), the header
section as raw fields, recipients from To/Cc/Bcc, Bcc removed, and From/Date/Message-ID added when missing.

Pure byte work: the header fields a user wrote are passed on byte for byte, never re-serialised.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["Message", "MessageTooBigError", "read_message"]

_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*:")  # RFC 5322 2.2: printable US-ASCII except ":"
_RECIPIENT_FIELDS = ("to", "cc", "bcc")


class MessageTooBigError(ValueError):
    """Standard input held more than the limit."""


def read_message(stream: BinaryIO, *, dot_ends: bool, limit: int) -> bytes:
    """Standard input with CRLF line ends. Without -i/-oi a line holding only "." ends the message (and
    is not part of it), as with every sendmail. Raises MessageTooBigError past ``limit`` octets."""
    lines: list[bytes] = []
    size = 0
    for raw in stream:
        line = raw.rstrip(b"\n").removesuffix(b"\r")
        if dot_ends and line == b".":
            break
        size += len(line) + 2
        if limit and size > limit:
            raise MessageTooBigError(f"the message is larger than {limit} octets")
        lines.append(line + b"\r\n")
    return b"".join(lines)


@dataclass
class Message:
    """Header fields (each with its continuation lines and CRLF) and the rest (blank line and body)."""

    fields: list[bytes]
    rest: bytes

    @classmethod
    def parse(cls, data: bytes) -> Message:
        if data.startswith(b"From "):  # an mbox separator line (mail(1), some scripts) is not a header
            data = data.split(b"\r\n", 1)[1] if b"\r\n" in data else b""
        fields: list[bytes] = []
        position = 0
        while position < len(data):
            end = data.find(b"\r\n", position)
            end = len(data) if end < 0 else end + 2
            line = data[position:end]
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1] += line  # a folded continuation line (RFC 5322 2.2.3)
            elif _FIELD_NAME.match(line):
                fields.append(line if line.endswith(b"\r\n") else line + b"\r\n")
            else:
                break  # the blank line, or a body without one: everything from here is the body
            position = end
        rest = data[position:]
        if rest and not rest.startswith(b"\r\n"):
            rest = b"\r\n" + rest  # a body line that is no header: the header section ends before it
        return cls(fields, rest)

    def values(self, name: str) -> list[str]:
        """The unfolded values of every field called ``name`` (any case)."""
        found = []
        for field in self.fields:
            field_name, _, value = field.partition(b":")
            if field_name.strip().lower() == name.encode():
                text = value.decode("utf-8", "replace").replace("\r\n", "")
                found.append(text.strip())
        return found

    def has(self, name: str) -> bool:
        return bool(self.values(name))

    def recipients(self) -> list[str]:
        """The addresses of To, Cc and Bcc (sendmail -t), in order, without display names or groups."""
        values = [value for name in _RECIPIENT_FIELDS for value in self.values(name)]
        return [address for _, address in email.utils.getaddresses(values) if address]

    def remove(self, name: str) -> None:
        self.fields = [
            field for field in self.fields if field.partition(b":")[0].strip().lower() != name.encode()
        ]

    def add(self, name: str, value: str) -> None:
        self.fields.append(f"{name}: {value}\r\n".encode())

    def complete(self, *, sender: str, full_name: str, hostname: str, unique: str, now: float) -> None:
        """RFC 5322 3.6: a message needs From and Date; RFC 6409 8.3 adds a Message-ID when missing."""
        if not self.has("from"):
            self.add("From", email.utils.formataddr((full_name, sender)) if full_name else sender)
        if not self.has("date"):
            self.add("Date", email.utils.formatdate(now, localtime=True))
        if not self.has("message-id"):
            self.add("Message-ID", f"<{unique}@{hostname}>")

    def prepend(self, lines: Iterable[bytes]) -> None:
        """Trace fields (Received) go on top (RFC 5321 4.4)."""
        self.fields[:0] = list(lines)

    def to_bytes(self) -> bytes:
        rest = self.rest if self.rest else b"\r\n"
        return b"".join(self.fields) + rest
