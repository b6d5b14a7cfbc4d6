"""Delivery status notifications (RFC 3464) as bytes: a pure function of the report, the clock and names.

It builds the multipart/report message for failures, delay warnings and success notices (Action: failed,
delayed, delivered, relayed), with the DSN extension's fields (RFC 3461 6: Original-Envelope-Id,
Original-Recipient) and the original message (RET=FULL) or its headers. It does not decide whom to notify
or queue anything (bounce.py, queue/notify.py).
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


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
_SUMMARIES = {
    "failed": "Your message could not be delivered to one or more recipients.",
    "delayed": "Your message could not be delivered yet to one or more recipients. It will be retried;"
    " you need not send it again.",
    "delivered": "Your message was delivered to the recipients below.",
    "relayed": "Your message was delivered to the recipients below.",
}


def _action(failed: FailedMessage) -> str:
    """The report's kind, by its gravest recipient: a failure outweighs a delay, a delay a success."""
    actions = {recipient.action for recipient in failed.recipients}
    return next((action for action in ("failed", "delayed", "delivered") if action in actions), "relayed")


def _why(recipient: FailedRecipient) -> str:
    if recipient.action == "failed":
        return "gave up after retrying until the message expired" if recipient.expired else "failed"
    if recipient.action == "delayed":
        return "delayed, still trying"
    if recipient.action == "relayed":
        return "relayed to a server that sends no delivery notices"
    return "delivered"


def _human(failed: FailedMessage, reporting_mta: str) -> str:
    attached = "It is attached below." if failed.original is not None else "Its headers are attached below."
    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        f"{_SUMMARIES[_action(failed)]} {attached}",
        "",
    ]
    for recipient in failed.recipients:
        lines.append(f"<{_field(recipient.address)}>: {_why(recipient)}: {_field(recipient.detail)}")
    return "\r\n".join(lines) + "\r\n"


def _per_recipient(recipient: FailedRecipient, now: float) -> str:
    kind = _address_type(recipient.address)
    lines = []
    if recipient.orcpt:  # RFC 3461 6.3 (c) / RFC 3464 2.3.1: the ORCPT as the client gave it
        lines.append(f"Original-Recipient: {_field(recipient.orcpt)}")
    lines += [
        f"Final-Recipient: {kind}; {_field(recipient.address)}",
        f"Action: {recipient.action}",
        f"Status: {recipient.status}",
    ]
    if recipient.remote_mta:
        lines.append(f"Remote-MTA: dns; {_field(recipient.remote_mta)}")
    if recipient.diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {_field(recipient.diagnostic)}")
    lines.append(f"Last-Attempt-Date: {email.utils.formatdate(now)}")
    if recipient.will_retry_until is not None:
        lines.append(f"Will-Retry-Until: {email.utils.formatdate(recipient.will_retry_until)}")
    return "\r\n".join(lines) + "\r\n"


def build_dsn(failed: FailedMessage, *, settings: DsnSettings, now: float) -> bytes:
    """The whole report, CRLF line ends: headers, a human part, message/delivery-status, then the original
    message (message/rfc822, when ``failed.original`` holds it: RET=FULL) or its headers (text/rfc822-headers,
    RFC 3462). From MAILER-DAEMON, to the envelope sender."""
    mta, boundary = _field(settings.reporting_mta), settings.boundary
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{mta}>",
        f"To: <{_field(failed.sender)}>",
        f"Subject: {_SUBJECTS[_action(failed)]}",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: <{_field(settings.message_id)}>",
        "Auto-Submitted: auto-replied",  # RFC 3834 5: no auto-reply may answer it
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    envid = f"Original-Envelope-Id: {_field(failed.envid)}\r\n" if failed.envid else ""  # RFC 3464 2.2.1
    status = (
        envid + f"Reporting-MTA: dns; {mta}\r\n"
        f"X-Postroom-Queue-ID: {_field(failed.queue_id)}\r\n"
        f"Arrival-Date: {email.utils.formatdate(failed.received_at)}\r\n"
        + "".join("\r\n" + _per_recipient(recipient, now) for recipient in failed.recipients)
    )
    human = _human(failed, mta)
    if failed.original is not None:
        original, description, kind = failed.original, "Undelivered message", "message/rfc822"
    else:
        original, description, kind = failed.headers, "Undelivered message headers", "text/rfc822-headers"
    original = original if original.endswith(b"\r\n") else original + b"\r\n"
    text = (
        "\r\n".join(headers)
        + "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n"
        + f"--{boundary}\r\nContent-Description: Notification\r\n"
        + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + human
        + f"\r\n--{boundary}\r\nContent-Description: Delivery report\r\n"
        + "Content-Type: message/delivery-status\r\n\r\n"
        + status
        + f"\r\n--{boundary}\r\nContent-Description: {description}\r\n"
        + f"Content-Type: {kind}\r\n\r\n"
    )
    return text.encode("utf-8") + original.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()
