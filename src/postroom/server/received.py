"""The Received: trace header (RFC 5321 4.4, RFC 3848 'with' types) put on top of every accepted message."""

from __future__ import annotations

import email.utils

__all__ = ["received_header"]


def protocol_name(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """RFC 3848 / RFC 6531 'with' keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTP, UTF8SMTPS ..."""
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    queue_id: str,
    protocol: str,
    recipient: str | None,
    now: float,
) -> bytes:
    """One folded Received: field with CRLF line endings. ``recipient`` only when there is exactly one:
    naming one of several would leak the others' existence to each of them."""
    literal = f"IPv6:{client_ip}" if ":" in client_ip else client_ip
    helo_text = _clean(helo) or "unknown"
    lines = [
        f"Received: from {helo_text} ([{literal}])",
        f"\tby {hostname} (postroom) with {protocol} id {queue_id}",
    ]
    stamp = email.utils.formatdate(now, localtime=False)
    if recipient is not None:
        lines.append(f"\tfor <{_clean(recipient)}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _clean(text: str) -> str:
    """Client-supplied text inside a header: no control characters, no way to end the field."""
    return "".join(char for char in text if char.isprintable() and char not in "()<>;\\")[:255]
