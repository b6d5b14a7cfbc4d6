"""The Maildir form of a spool file: the bytes a local mailbox will hold, so local delivery can be a link.

A message for exactly one local mailbox is spooled as its Maildir file will look: the trace headers that
final delivery prepends (Return-Path, Delivered-To) and then the message with CRLF turned into LF, the
on-disk form of mailbox/maildir.py. Local delivery then hard-links the spool file into ``new/`` instead of
copying it. Such a file is recognised by its first line: ``Return-Path: <...>`` ending in a bare LF, which a
spool file in wire form (CRLF lines, starting with our Received header) never has.

The form is reversible because it is only kept while the message has no bare LF (SpoolWriter checks every
write and rewrites the file in wire form when one appears): every LF then stood for a CRLF. This module
only knows the bytes; the writer is spool.py, the link is delivery/local.py and mailbox/maildir.py.
"""

from __future__ import annotations

__all__ = ["exact_lf", "local_prefix", "prefix_length", "trace_headers", "wire_form"]

_RETURN_PATH = b"Return-Path: <"
_DELIVERED_TO = b"Delivered-To: "


def _header_value(text: str) -> bytes:
    # the envelope was checked by the protocol; still, no line break may ever reach a header
    return text.replace("\r", "").replace("\n", "").encode("utf-8", "surrogateescape")


def trace_headers(*, sender: str, mailbox: str) -> bytes:
    """RFC 5321 4.4: the final delivery adds Return-Path (``<>`` for the null sender); Delivered-To
    (Postfix's and qmail's) names the mailbox, so forwarding loops show and sieve scripts can match."""
    return _RETURN_PATH + _header_value(sender) + b">\r\n" + _DELIVERED_TO + _header_value(mailbox) + b"\r\n"


def local_prefix(*, sender: str, mailbox: str) -> bytes:
    """The trace headers in Maildir form (LF line ends): the first bytes of a spool file in that form."""
    return trace_headers(sender=sender, mailbox=mailbox).replace(b"\r\n", b"\n")


def exact_lf(data: bytes) -> bytes | None:
    """``data`` with CRLF turned into LF, or None when it has a bare LF (the LF form could not give it back).

    A bare CR is kept as it is, in both forms. The caller keeps a CR at the end of a piece for the next one.
    """
    out = data.replace(b"\r\n", b"\n")
    return out if out.count(b"\n") == len(data) - len(out) else None


def prefix_length(start: bytes) -> int:
    """Length of the Maildir-form trace headers at the start of a spool file's first bytes; 0: wire form."""
    if not start.startswith(_RETURN_PATH):
        return 0
    first = start.find(b"\n")
    if first < 0 or start[first - 1 : first] == b"\r" or not start.startswith(_DELIVERED_TO, first + 1):
        return 0
    second = start.find(b"\n", first + 1)
    return second + 1 if second > 0 and start[second - 1 : second] != b"\r" else 0


def wire_form(data: bytes) -> bytes:
    """The first bytes of a spool file as the message was received: Maildir form loses its trace headers and
    gets its CRLFs back; wire form is returned as it is."""
    skip = prefix_length(data)
    return data[skip:].replace(b"\n", b"\r\n") if skip else data
