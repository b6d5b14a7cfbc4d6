"""Large messages for one local mailbox through a real server: spooled in the mailbox's form and linked in,
with the same bytes a copy gives; BDAT with bare LFs and aliases to several mailboxes stay correct."""

from __future__ import annotations

import smtplib

from postroom.config import Config
from tests.helpers.server import ServerThread, maildir_messages, wait_for
from tests.helpers.transcript import Transcript

BODY = b"Subject: big\r\n\r\n" + b"line of a large body .\r\n..starts with a dot\r\n" * 3000  # ~130 KiB


def _delivered(config: Config, address: str) -> bytes:
    (path,) = wait_for(lambda: maildir_messages(config, address), what=f"delivery to {address}")
    return path.read_bytes()


def _after_received(data: bytes, address: str) -> bytes:
    """The Maildir file must be: trace headers, our Received header, then the message with LF endings."""
    head = f"Return-Path: <a@example.test>\nDelivered-To: {address}\nReceived: ".encode()
    assert data.startswith(head)
    return data[data.index(b"\n\n", len(head)) - len(b"Subject: big") :]


def test_a_large_message_for_one_mailbox_arrives_whole(server: ServerThread, config: Config) -> None:
    with smtplib.SMTP(*server.address) as client:
        client.sendmail("a@example.test", ["alice@postroom.test"], BODY)
    data = _delivered(config, "alice@postroom.test")
    assert _after_received(data, "alice@postroom.test") == BODY.replace(b"\r\n", b"\n")
    spool = config.queue_dir / "spool"
    wait_for(lambda: not any(spool.iterdir()), what="the spool file removed after delivery")
    assert _delivered(config, "alice@postroom.test") == data  # the mailbox's name stays


def test_an_alias_to_two_mailboxes_gives_each_its_own_trace_headers(
    server: ServerThread, config: Config
) -> None:
    with smtplib.SMTP(*server.address) as client:
        client.sendmail("a@example.test", ["team@postroom.test"], BODY)
    for address in ("alice@postroom.test", "bob@postroom.test"):
        data = _delivered(config, address)
        assert _after_received(data, address) == BODY.replace(b"\r\n", b"\n")


def test_bdat_with_bare_line_feeds_is_delivered_as_a_copy_would(server: ServerThread, config: Config) -> None:
    body = b"Subject: big\r\n\r\n" + b"binary\nline\r\nmore\r\r\n" * 5000
    with Transcript(server.address) as t:
        t.expect("220 *")
        for command in (
            "EHLO client.example",
            "MAIL FROM:<a@example.test> BODY=BINARYMIME",
            "RCPT TO:<alice@postroom.test>",
        ):
            t.send(command)
            t.expect("250 *")
        t.send_raw(f"BDAT {len(body)} LAST\r\n".encode() + body)
        t.expect("250 2.0.0 Ok: queued as *")
    data = _delivered(config, "alice@postroom.test")
    assert _after_received(data, "alice@postroom.test") == body.replace(b"\r\n", b"\n")
