"""The RFC 3464 report as bytes: parsed back with the stdlib email package, field by field."""

from __future__ import annotations

import email
import email.message
import email.policy

from postroom.delivery.dsn import DsnSettings, build_dsn
from postroom.queue import FailedMessage, FailedRecipient

SETTINGS = DsnSettings(reporting_mta="mx.example.test", boundary="=_q1", message_id="q1.dsn@mx.example.test")
ORIGINAL = b"From: a@example.test\r\nSubject: hello\r\n\r\n"


def _failed(*recipients: FailedRecipient, headers: bytes = ORIGINAL) -> FailedMessage:
    return FailedMessage(
        queue_id="q1",
        sender="a@example.test",
        received_at=1_700_000_000.0,
        recipients=recipients,
        headers=headers,
    )


def _parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_report_has_human_status_and_original_header_parts() -> None:
    rejected = FailedRecipient(
        address="bob@remote.test",
        status="5.1.1",
        detail="mx.remote.test said: 550 5.1.1 No such user",
        remote_mta="mx.remote.test",
        diagnostic="550 5.1.1 No such user",
    )
    data = build_dsn(_failed(rejected), settings=SETTINGS, now=1_700_000_100.0)
    assert b"\n" not in data.replace(b"\r\n", b"")
    report = _parse(data)
    assert report["To"] == "a@example.test"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    human, status, headers = report.get_payload()  # type: ignore[misc]
    assert "bob@remote.test" in human.get_content()
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert per_message["Arrival-Date"]
    assert per_recipient["Final-Recipient"] == "rfc822; bob@remote.test"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Remote-MTA"] == "dns; mx.remote.test"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user"
    assert "Subject: hello" in headers.get_payload()


def test_several_recipients_one_report_and_no_header_injection() -> None:
    one = FailedRecipient(address="x@a.test", status="4.4.7", detail="expired\r\nBcc: evil", expired=True)
    two = FailedRecipient(address="y@a.test", status="5.0.0", detail="no")
    report = _parse(build_dsn(_failed(one, two, headers=b"Subject: s"), settings=SETTINGS, now=0.0))
    _human, status, headers = report.get_payload()  # type: ignore[misc]
    blocks = status.get_payload()
    assert [block["Final-Recipient"] for block in blocks[1:]] == ["rfc822; x@a.test", "rfc822; y@a.test"]
    assert "Remote-MTA" not in blocks[1]
    assert report["Bcc"] is None
    assert headers.get_payload().strip() == "Subject: s"


def test_non_ascii_recipient_is_a_utf8_address_type() -> None:
    rcpt = FailedRecipient(address="jösé@example.test", status="5.1.1", detail="no")
    report = _parse(build_dsn(_failed(rcpt), settings=SETTINGS, now=0.0))
    _human, status, _headers = report.get_payload()  # type: ignore[misc]
    assert status.get_payload()[1]["Final-Recipient"].startswith("utf-8; ")
