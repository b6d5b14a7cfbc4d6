"""Delivery status notifications (RFC 3464) as bytes: a pure function of the failure, the clock and names.

It builds the multipart/report message; it does not decide whom to bounce or queue anything (bounce.py).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from postroom.queue import FailedMessage, FailedRecipient

__all__ = ["DsnSettings", "build_dsn"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnSettings:
    """Who reports: the MTA's host name (Reporting-MTA, From: MAILER-DAEMON@) and the message's ids."""

    reporting_mta: str
    boundary: str  # unique per report: "=_<queue id>"
    message_id: str  # without the angle brackets


def _field(value: str) -> str:
    """A header or DSN field value on one line: CR and LF can never end it early (header injection)."""
    return " ".join(value.replace("\r", " ").replace("\n", " ").split())


def _address_type(address: str) -> str:
    # RFC 6533 3: non-ASCII addresses are "utf-8" addresses; the rest "rfc822" (RFC 3464 2.3.2).
    return "rfc822" if address.isascii() else "utf-8"


def _human(failed: FailedMessage, reporting_mta: str) -> str:
    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients. It is attached below.",
        "",
    ]
    for recipient in failed.recipients:
        why = "gave up after retrying until the message expired" if recipient.expired else "failed"
        lines.append(f"<{_field(recipient.address)}>: {why}: {_field(recipient.detail)}")
    return "\r\n".join(lines) + "\r\n"


def _per_recipient(recipient: FailedRecipient, now: float) -> str:
    kind = _address_type(recipient.address)
    lines = [
        f"Final-Recipient: {kind}; {_field(recipient.address)}",
        "Action: failed",
        f"Status: {recipient.status}",
    ]
    if recipient.remote_mta:
        lines.append(f"Remote-MTA: dns; {_field(recipient.remote_mta)}")
    if recipient.diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {_field(recipient.diagnostic)}")
    lines.append(f"Last-Attempt-Date: {email.utils.formatdate(now)}")
    return "\r\n".join(lines) + "\r\n"


def build_dsn(failed: FailedMessage, *, settings: DsnSettings, now: float) -> bytes:
    """The whole report, CRLF line ends: headers, a human part, message/delivery-status, the original
    headers as text/rfc822-headers (RFC 3462). From MAILER-DAEMON, to the envelope sender."""
    mta, boundary = _field(settings.reporting_mta), settings.boundary
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_field(failed.sender)}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{_field(settings.message_id)}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 5: no auto-reply may answer it
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    status = (
        f"Reporting-MTA: dns; {mta}\r\n"
        f"X-Postroom-Queue-ID: {_field(failed.queue_id)}\r\n"
        f"Arrival-Date: {email.utils.formatdate(failed.received_at)}\r\n"
        + "".join("\r\n" + _per_recipient(recipient, now) for recipient in failed.recipients)
    )
    human = _human(failed, mta)
    original = failed.headers if failed.headers.endswith(b"\r\n") else failed.headers + b"\r\n"
    text = (
        "\r\n".join(headers)
        + "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n"
        + f"--{boundary}\r\nContent-Description: Notification\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + human
        + f"\r\n--{boundary}\r\nContent-Description: Delivery report\r\n"
        + "Content-Type: message/delivery-status\r\n\r\n"
        + status
        + f"\r\n--{boundary}\r\nContent-Description: Undelivered message headers\r\n"
        + "Content-Type: text/rfc822-headers\r\n\r\n"
    )
    return text.encode("utf-8") + original.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()
