"""Message-body framing: DATA for the server (dot-unstuffing, end of data), BDAT chunks (RFC 3030), and
DATA for the client (DotStuffer: line ends made CRLF, dot-stuffing, the end-of-data line).

Readers take whatever bytes arrived and hand back message octets at once, holding back only the two or three
trailing octets that could still turn out to be the start of CRLF.CRLF or of a dot-stuffed line, so memory
stays bounded whatever the message size. All the scanning is done on whole buffers with ``bytes.find``,
``bytes.rfind``, ``bytes.count`` and ``bytes.replace``: there is no per-line Python loop.

Rules (what this module does *not* do: decide what to answer, or look at headers):

- The DATA body ends at CRLF "." CRLF and nowhere else (RFC 5321 4.1.1.4). A bare LF or bare CR never ends
  a message, so "\\n.\\n", "\\r.\\r", "\\r\\n.\\n" cannot smuggle a second message past us (CVE-2023-51764).
- Dot-unstuffing (RFC 5321 4.5.2) removes the first "." of a line that follows a real CRLF. In ``normalize``
  mode bare CR and bare LF become CRLF *after* unstuffing and end detection, so a line that followed a bare
  line ending keeps its dot; end detection always looks at the octets as sent.
- Bare CR / bare LF are found by counting (CR count, LF count, CRLF count); text lines longer than 1000 octets
  with their CRLF (RFC 5321 4.5.3.1.6, not counting a stuffed dot) by stepping ``rfind`` a line-limit apart.
- NUL octets are accepted and passed on: the session may refuse them (replies.MESSAGE_HAS_NUL) if it likes.
- BDAT chunks are raw octets: no unstuffing and no line checks (BINARYMIME allows anything, RFC 3030 3).
"""

from __future__ import annotations

from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["ChunkReader", "DotReader", "DotStuffer", "is_crlf_only"]

_END = b"\r\n.\r\n"
_MAX_TEXT_LINE = 998  # octets before the CRLF (RFC 5321 4.5.3.1.6: 1000 with the CRLF)


def is_crlf_only(data: bytes) -> bool:
    """Every CR and every LF in ``data`` is part of a CRLF (three counts, no per-line loop): its LF form
    is ``data`` without CRs (the spool's Maildir form relies on that too)."""
    carriages = data.count(b"\r")
    return carriages == data.count(b"\n") and (not carriages or data.count(b"\r\n") == carriages)


def _as_crlf(data: bytes) -> bytes:
    """Bare CR and bare LF made CRLF (RFC 5321 2.3.8)."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _undecided_tail(buffer: bytes) -> int:
    """How many trailing octets must wait for more input before they can be interpreted."""
    if buffer.endswith(b"\r\n.\r"):  # CRLF.CRLF, or a stuffed dot and a bare CR
        return 2
    if buffer.endswith((b"\r\n.", b"\r")):  # end or stuffed dot; CRLF or bare CR
        return 1
    return 0


class DotReader:
    """Reads one DATA body: ``feed(bytes)`` returns message octets and, once CRLF.CRLF was seen, the bytes
    that followed it (pipelined commands)."""

    __slots__ = (
        "_bare",
        "_context",
        "_held",
        "_line_length",
        "_long",
        "_max_size",
        "_normalize",
        "_reject_long_lines",
        "crlf_only",
        "size",
    )

    def __init__(self, *, max_size: int, normalize: bool, reject_long_lines: bool) -> None:
        self._max_size = max_size  # 0: unlimited
        self._normalize = normalize
        self._reject_long_lines = reject_long_lines
        self._context = b"\r\n"  # the last two octets consumed; the body starts on a new line
        self._held = b""  # undecided trailing octets
        self._line_length = 0  # octets of the current (unfinished) line so far
        self._bare = False
        self._long = False
        self.size = 0  # message octets, after unstuffing (and normalising), including any over the limit
        self.crlf_only = False  # every CR and LF of the last octets returned is part of a CRLF

    @property
    def problem(self) -> Reply | None:
        """Why the message must be refused, or None. Too big wins, then bare line endings, then long lines."""
        if self._max_size and self.size > self._max_size:
            return replies.MESSAGE_TOO_BIG
        if self._bare and not self._normalize:
            return replies.BARE_LINE_ENDING
        if self._long:
            return replies.TEXT_LINE_TOO_LONG
        return None

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Consume ``data``; return (message octets to pass on, the rest after the end or None if not ended).

        Once the message is over the size limit, the octets are counted and dropped (b"" is returned).
        """
        buffer = self._context + self._held + data
        # Every end marker starts with CRLF ".", and most messages have no line starting with a dot:
        # one scan usually settles both the end and the unstuffing.
        first_dot = buffer.find(b"\r\n.")
        end = -1 if first_dot < 0 else buffer.find(_END, first_dot)
        if end >= 0:
            cut, rest = end + 2, buffer[end + 5 :]  # the CRLF before "." belongs to the message
            self._held = b""
        else:
            cut, rest = len(buffer) - _undecided_tail(buffer), None
            self._held = buffer[cut:]
        # RFC 5321 4.5.2: a line after CRLF that starts with "." loses that dot.
        stuffed = 0 <= first_dot < cut - 2
        out = buffer[:cut].replace(b"\r\n.", b"\r\n")[2:] if stuffed else buffer[2:cut]
        self._context = buffer[cut - 2 : cut]
        return self._check(out), rest

    def _check(self, out: bytes) -> bytes:
        """Check for bare line endings (normalising them if asked), long lines and size; return what to emit.

        Unstuffing removes only a dot that follows CRLF, so it changes no CR/LF adjacency: counting on the
        unstuffed octets gives the same answer as on the octets sent. The reader never cuts between a CR
        and its LF (``_undecided_tail`` holds a trailing CR back), so each piece can be judged alone.
        """
        self.crlf_only = False
        if not out:
            return out
        if self._normalize or not self._bare:
            self.crlf_only = is_crlf_only(out)
            if not self.crlf_only:
                self._bare = True
                if self._normalize:
                    out, self.crlf_only = _as_crlf(out), True
        self.size += len(out)
        if self._max_size and self.size > self._max_size:
            return b""
        if self._reject_long_lines and not self._long and (self._normalize or not self._bare):
            self._check_line_lengths(out)
        return out

    def _check_line_lengths(self, out: bytes) -> None:
        """RFC 5321 4.5.3.1.6: at most 1000 octets with the CRLF, not counting a stuffed dot.

        Steps from line start to line start by the *last* LF within 1000 octets, so it costs one ``rfind``
        per ~1000 octets, not one step per line. (With bare CRs left in, which only happens when they are
        refused anyway, CR-separated pieces count as one line.)
        """
        window = _MAX_TEXT_LINE + 2  # the LF of a full-length line is the 1000th octet
        start = -self._line_length  # where the current line began, relative to ``out``
        while start + window <= len(out):
            newline = out.rfind(b"\n", max(start, 0), start + window)
            if newline < 0:
                self._long = True
                return
            start = newline + 1
        last = out.rfind(b"\n", max(start, 0))
        self._line_length = len(out) - (start if last < 0 else last + 1)


class ChunkReader:
    """Counts off the octets of one BDAT chunk (RFC 3030 2): raw bytes, never interpreted as commands."""

    __slots__ = ("last", "refusal", "remaining")

    def __init__(self, size: int, *, last: bool, refusal: Reply | None = None) -> None:
        self.remaining = size
        self.last = last
        self.refusal = refusal  # set when the BDAT was out of sequence: the octets are read and dropped

    def read(self, buffer: bytearray) -> bytes:
        """Remove and return up to ``remaining`` octets from the front of ``buffer``."""
        count = min(self.remaining, len(buffer))
        if count == len(buffer):
            piece = bytes(buffer)
            buffer.clear()
        else:
            piece = bytes(buffer[:count])
            del buffer[:count]
        self.remaining -= count
        return piece


class DotStuffer:
    """Writes one DATA body for the wire, streaming: ``feed(chunk)`` as often as needed, then ``end()``.

    RFC 5321 2.3.8: bare CR and bare LF are sent as CRLF (which also keeps a lax receiver from seeing an
    end of data we did not mean, CVE-2023-51764). RFC 5321 4.5.2: a line starting with "." gets another.
    Both are done with ``bytes.count`` and ``bytes.replace`` on whole chunks; only a trailing CR (which may
    be the start of a CRLF) and the last two octets written (the context for the next chunk) are carried.
    """

    __slots__ = ("_context", "_held")

    def __init__(self) -> None:
        self._context = b"\r\n"  # the last two octets written: the body starts at the start of a line
        self._held = b""  # a trailing CR, until we know whether an LF follows it

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        if data.endswith(b"\r"):
            self._held, data = b"\r", data[:-1]
        else:
            self._held = b""
        return self._write(data)

    def end(self) -> bytes:
        """The rest of the body, a CRLF if it did not end with one, and the end-of-data line "." CRLF."""
        out = self._write(self._held)
        self._held = b""
        if self._context != b"\r\n":  # a non-empty body must end with CRLF before the "." (4.1.1.4)
            out += b"\r\n"
        return out + b".\r\n"

    def _write(self, data: bytes) -> bytes:
        if not data:
            return data
        if not is_crlf_only(data):
            data = _as_crlf(data)
        buffer = self._context + data
        self._context = buffer[-2:]
        if b"\r\n." not in buffer:
            return data
        return buffer.replace(b"\r\n.", b"\r\n..")[2:]  # the context's own octets were written already
