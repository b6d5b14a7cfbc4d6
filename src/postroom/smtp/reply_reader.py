"""Reply framing for the client side: received bytes in, complete replies out (RFC 5321 4.2, with the
enhanced status codes of RFC 2034/3463 taken apart). Pure; it does not know which command a reply answers
(client.py does)."""

from __future__ import annotations

import re

from postroom.smtp import replies
from postroom.smtp.errors import RemoteProtocolError
from postroom.smtp.types import Reply, Status

__all__ = ["ReplyReader"]

# RFC 3463 2: class "." subject "." detail, at the start of the text (RFC 2034 3), then a space or the end.
_STATUS = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |\Z)")


def _malformed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(replies.REMOTE_REPLY_MALFORMED, reason=reason)


class ReplyReader:
    """Splits received bytes into replies: ``Reply-code [("-" / SP) textstring] CRLF`` lines, the last one
    with SP (RFC 5321 4.2). A bare LF is accepted as a line end; limits bound the memory used."""

    __slots__ = ("_buffer", "_lines", "_max_line", "_max_lines")

    def __init__(self, *, max_line: int, max_lines: int) -> None:
        self._buffer = bytearray()
        self._lines: list[tuple[int, str]] = []  # the lines of the reply being read
        self._max_line = max_line
        self._max_lines = max_lines

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def clear(self) -> None:
        self._buffer.clear()
        self._lines.clear()

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None if more bytes are needed. Raises RemoteProtocolError."""
        buffer = self._buffer
        while True:
            newline = buffer.find(b"\n")
            if newline < 0 and len(buffer) < self._max_line:
                return None
            if newline < 0 or newline + 1 > self._max_line:
                raise _malformed(f"reply line longer than {self._max_line} octets")
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            code, last, text = _split_line(line[:-1] if line.endswith(b"\r") else line)
            if self._lines and code != self._lines[0][0]:
                raise _malformed(f"multi-line reply mixes codes {self._lines[0][0]} and {code}")
            self._lines.append((code, text))
            if len(self._lines) > self._max_lines:
                raise _malformed(f"reply of more than {self._max_lines} lines")
            if last:
                lines, self._lines = self._lines, []
                return _build_reply(code, [text for _, text in lines])


def _split_line(line: bytes) -> tuple[int, bool, str]:
    """(code, is the last line, text) of one reply line without its line end."""
    if len(line) < 3 or not line[:3].isdigit():
        raise _malformed(f"reply line does not start with a code: {line[:20]!r}")
    separator = line[3:4]
    if separator not in (b"", b" ", b"-"):
        raise _malformed(f"reply code followed by {separator!r}")
    text = line[4:].decode("utf-8", errors="replace")  # RFC 6531 3.7.4 allows UTF-8; be liberal
    if "\r" in text:
        raise _malformed("bare CR in a reply line")
    return int(line[:3]), separator != b"-", text


def _build_reply(code: int, texts: list[str]) -> Reply:
    """A Reply from the lines' texts. An enhanced status (RFC 2034) is taken when the first line starts with
    one of the code's class, and removed from every line that repeats it."""
    status: Status | None = None
    match = _STATUS.match(texts[0])
    if match is not None and int(match.group(1)) == code // 100:
        status = Status(*(int(part) for part in match.groups()))
        prefix = f"{status} "
        texts = [text[len(prefix) :] if (text + " ").startswith(prefix) else text for text in texts]
    try:
        return Reply(code, status, "\n".join(texts))
    except ValueError as error:  # a code outside 200..599
        raise _malformed(str(error)) from None
