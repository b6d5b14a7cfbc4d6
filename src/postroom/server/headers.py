"""Message fixes at submission (RFC 6409 8): a Date and a Message-ID header when the client sent none.

The header section is held back while it streams in (up to a bound), checked, completed, and then passed
on with the rest of the body unchanged. A header section too long to hold is passed on untouched.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable

__all__ = ["HeaderCompleter"]

_LIMIT = 64 * 1024
_HAS_DATE = re.compile(rb"(?im)^date[ \t]*:")
_HAS_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:")


class HeaderCompleter:
    """Feed message bytes (CRLF lines); complete headers reach ``write`` once the header section ended."""

    def __init__(self, *, write: Callable[[bytes], None], hostname: str, unique: str, now: float) -> None:
        self._write = write
        self._hostname = hostname
        self._unique = unique
        self._now = now
        self._held: bytearray | None = bytearray()  # None once the headers went out

    def feed(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._write(data)
            return
        held += data
        if held.startswith(b"\r\n"):
            end = 0  # no header section at all: the fixes go in front of the body
        else:
            end = held.find(b"\r\n\r\n")
            if end < 0:
                if len(held) > _LIMIT:
                    self._release(bytes(held))  # too long to inspect: leave it as the client made it
                return
            end += 2  # keep the CRLF that ends the last header line
        self._release(bytes(held[:end]) + self._missing(bytes(held[:end])) + bytes(held[end:]))

    def finish(self) -> None:
        """End of message: a message that was all headers (no blank line) is completed too."""
        held = self._held
        if held is None:
            return
        text = bytes(held)
        if text and not text.endswith(b"\r\n"):
            text += b"\r\n"
        self._release(text + self._missing(text))

    def _missing(self, headers: bytes) -> bytes:
        added = b""
        if not _HAS_DATE.search(headers):
            added += f"Date: {email.utils.formatdate(self._now, localtime=True)}\r\n".encode()
        if not _HAS_MESSAGE_ID.search(headers):
            added += f"Message-ID: <{self._unique}@{self._hostname}>\r\n".encode()
        return added

    def _release(self, data: bytes) -> None:
        self._held = None
        self._write(data)
