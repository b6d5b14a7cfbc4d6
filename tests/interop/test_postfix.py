"""Interop with a real Postfix on loopback: postroom delivers to it and receives from it, over STARTTLS, and
each side's refusals come back to the sender as bounces the other side made.

Postfix runs as a private instance (tests/helpers/postfix.py) with its own config, queue and log under
tmp_path; postroom finds it as pf.test's MX through the loopback DNS server, and Postfix sends everything else
to postroom as its relayhost.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.config import Config
from tests.e2e.conftest import add_accounts
from tests.helpers.dns import DnsServer
from tests.helpers.postfix import PostfixInstance, needs_postfix
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for

pytestmark = [needs_postfix, pytest.mark.slow]

_ALICE = "alice@postroom.test"


def _certificate(tmp_path: Path, hostname: str) -> tuple[Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert(hostname)
    cert_file, key_file = tmp_path / f"{hostname}.crt", tmp_path / f"{hostname}.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def _postroom_config(tmp_path: Path, dns_server: DnsServer, **sections: Any) -> Config:
    cert_file, key_file = _certificate(tmp_path, "mx.postroom.test")
    config = make_config(
        tmp_path / "postroom",
        smtp={"relay_networks": ["127.0.0.0/8"]},
        tls={"cert_file": str(cert_file), "key_file": str(key_file)},
        dns={"nameservers": [dns_server.address], "timeout": 2},
        queue={"retry_schedule": [0.5]},
        **sections,
    )
    add_accounts(config)
    return config


@pytest.fixture
def postfix(tmp_path: Path) -> Iterator[PostfixInstance]:
    """A Postfix keeping mail for pf.test (carol, someone), offering STARTTLS; the rest goes nowhere."""
    cert_file, key_file = _certificate(tmp_path, "mx.pf.test")
    with PostfixInstance(
        domain="pf.test", mailboxes=["carol", "someone"], cert_file=cert_file,
        key_file=key_file,
    ) as instance:
        yield instance


@pytest.fixture
def sender(tmp_path: Path, dns_server: DnsServer, postfix: PostfixInstance) -> Iterator[ServerThread]:
    """postroom, delivering to pf.test's MX (the Postfix above) through the loopback DNS server."""
    dns_server.add("pf.test", "MX", "10 mx.pf.test.").add("mx.pf.test", "A", "127.0.0.1")
    config = _postroom_config(tmp_path, dns_server, delivery={"smtp_port": postfix.address[1]})
    with server_thread(config) as running:
        yield running


def _parse(path: Path) -> email.message.EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_postroom_delivers_to_postfix_over_starttls_byte_for_byte(
    sender: ServerThread, postfix: PostfixInstance
) -> None:
    # 8-bit text and a body big enough for several BDAT chunks when Postfix offers CHUNKING.
    lines = [f"line {n:06d}: grüße aus postroom, {'x' * 60}".encode() for n in range(6000)]
    original = (
        b"From: Alice <alice@postroom.test>\r\nTo: carol@pf.test\r\nSubject: interop\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + b"\r\n".join(lines)
        + b"\r\n.leading dot stays\r\n"
    )
    with smtplib.SMTP(*sender.address, timeout=10) as client:
        client.sendmail(_ALICE, ["carol@pf.test"], original, mail_options=["BODY=8BITMIME"])

    path = wait_for(lambda: postfix.maildir_messages("carol"), timeout=30, what="Postfix's Maildir")[0]
    delivered = path.read_bytes().replace(b"\n", b"\r\n")  # Postfix stores LF line ends
    headers, _, body = delivered.partition(b"\r\n\r\n")
    original_headers, _, original_body = original.partition(b"\r\n\r\n")
    assert body == original_body
    assert original_headers in headers  # Postfix appends the Date and Message-ID the message lacked
    log = postfix.wait_for_log("status=sent")
    assert "TLS connection established from" in log
    assert f"from=<{_ALICE}>" in log
    wait_for(lambda: sender.app is not None and sender.app.queue.message_count() == 0, what="an empty queue")


def test_a_postfix_refusal_comes_back_to_the_sender_as_a_bounce(
    sender: ServerThread, postfix: PostfixInstance
) -> None:
    message = b"From: alice@postroom.test\r\nTo: nobody@pf.test\r\nSubject: to nobody\r\n\r\nHello?\r\n"
    with smtplib.SMTP(*sender.address, timeout=10) as client:
        client.sendmail(_ALICE, ["nobody@pf.test"], message)

    assert sender.app is not None
    config = sender.app.config
    bounce = _parse(wait_for(lambda: maildir_messages(config, _ALICE), timeout=30, what="the bounce")[0])
    assert bounce.get_content_type() == "multipart/report"
    status = bounce.get_payload()[1]  # type: ignore[index]
    recipient_fields = status.get_payload()[1]
    assert recipient_fields["Action"] == "failed"
    assert recipient_fields["Status"] == "5.1.1"
    assert "550" in recipient_fields["Diagnostic-Code"]
    assert recipient_fields["Remote-MTA"] == "dns; mx.pf.test"


@pytest.fixture
def receiver(tmp_path: Path, dns_server: DnsServer) -> Iterator[ServerThread]:
    """postroom keeping mail for postroom.test; Postfix relays to it."""
    with server_thread(_postroom_config(tmp_path, dns_server)) as running:
        yield running


@pytest.fixture
def relaying_postfix(tmp_path: Path, receiver: ServerThread) -> Iterator[PostfixInstance]:
    with PostfixInstance(
        domain="pf.test", mailboxes=["someone"], relayhost=receiver.address
    ) as instance:
        yield instance


def test_postfix_relays_to_postroom_over_starttls(
    receiver: ServerThread, relaying_postfix: PostfixInstance
) -> None:
    message = (
        b"From: someone@pf.test\r\nTo: bob@postroom.test\r\nSubject: from postfix\r\n"
        b"Message-ID: <interop-1@pf.test>\r\n\r\nHello from Postfix.\r\n"
    )
    with smtplib.SMTP(*relaying_postfix.address, timeout=10) as client:
        client.sendmail("someone@pf.test", ["bob@postroom.test"], message)

    assert receiver.app is not None
    config = receiver.app.config
    paths = wait_for(lambda: maildir_messages(config, "bob@postroom.test"), timeout=30, what="the mail")
    stored = _parse(paths[0])
    assert stored["Subject"] == "from postfix"
    assert stored["Return-Path"] == "<someone@pf.test>"
    ours = stored.get_all("Received")[0]
    assert "from mx.pf.test" in ours
    assert "by mx.postroom.test" in ours
    assert "with ESMTPS" in ours  # Postfix took our STARTTLS offer
    assert stored.get_content().strip() == "Hello from Postfix."
    log = relaying_postfix.wait_for_log("status=sent")
    assert "TLS connection established to 127.0.0.1" in log


def test_a_postroom_refusal_comes_back_from_postfix_as_its_bounce(
    receiver: ServerThread, relaying_postfix: PostfixInstance
) -> None:
    message = b"From: someone@pf.test\r\nTo: ghost@postroom.test\r\nSubject: to a ghost\r\n\r\nBoo.\r\n"
    with smtplib.SMTP(*relaying_postfix.address, timeout=10) as client:
        client.sendmail("someone@pf.test", ["ghost@postroom.test"], message)

    paths = wait_for(lambda: relaying_postfix.maildir_messages("someone"), timeout=30, what="the bounce")
    bounce = _parse(paths[0])
    assert bounce.get_content_type() == "multipart/report"
    text = bounce.as_string()
    assert "Status: 5.1.1" in text
    assert "550 5.1.1" in text  # our reply, quoted by Postfix in its Diagnostic-Code
    log = relaying_postfix.log()
    assert "status=bounced" in log
