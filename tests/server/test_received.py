"""The Received: trace header."""

from __future__ import annotations

from postroom.server.received import protocol_name, received_header


def test_received_names_client_us_protocol_id_and_single_recipient() -> None:
    header = received_header(
        helo="client.example",
        client_ip="192.0.2.7",
        hostname="mx.postroom.test",
        queue_id="ABC123",
        protocol="ESMTP",
        recipient="bob@postroom.test",
        now=0.0,
    ).decode()
    assert header.startswith("Received: from client.example ([192.0.2.7])\r\n")
    assert "\tby mx.postroom.test (postroom) with ESMTP id ABC123\r\n" in header
    assert "\tfor <bob@postroom.test>; Thu, 01 Jan 1970 00:00:00 -0000\r\n" in header
    assert header.endswith("\r\n")


def test_received_hides_recipients_when_several_and_cleans_helo() -> None:
    header = received_header(
        helo="evil\r\nX-Injected: yes",
        client_ip="2001:db8::1",
        hostname="mx",
        queue_id="Q",
        protocol="ESMTP",
        recipient=None,
        now=0.0,
    ).decode()
    assert "for <" not in header
    assert "X-Injected: yes\r\n" not in header
    assert "[IPv6:2001:db8::1]" in header
    assert header.count("\r\n") == 3


def test_protocol_names_per_rfc_3848() -> None:
    assert protocol_name(extended=False, tls=False, authenticated=False, smtputf8=False) == "SMTP"
    assert protocol_name(extended=True, tls=True, authenticated=True, smtputf8=False) == "ESMTPSA"
    assert protocol_name(extended=True, tls=False, authenticated=False, smtputf8=True) == "UTF8SMTP"
