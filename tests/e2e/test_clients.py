"""Real clients (smtplib, swaks) hand real mail to a real server; it lands in Maildir."""

from __future__ import annotations

import re
import smtplib
import subprocess
from email.message import EmailMessage

import pytest

from postroom.config import Config
from tests.helpers.peers import needs
from tests.helpers.server import ServerThread, maildir_messages, wait_for

needs_swaks = needs("swaks")


def test_smtplib_message_lands_in_maildir_with_trace_headers(server: ServerThread, config: Config) -> None:
    message = EmailMessage()
    message["From"] = "sender@example.test"
    message["To"] = "alice@postroom.test"
    message["Subject"] = "hello"
    message.set_content("first line\n.starts with a dot\n..two dots\n.\nlast line\n")
    host, port = server.address
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.does_esmtp
        refused = client.send_message(message)
        assert refused == {}
        assert client.noop()[0] == 250
    (path,) = wait_for(lambda: maildir_messages(config, "alice@postroom.test"), what="delivery")
    stored = path.read_bytes()
    assert b"\r\n" not in stored  # Maildir holds LF line endings, as mutt and Dovecot expect
    lines = stored.split(b"\n")
    assert lines[0] == b"Return-Path: <sender@example.test>"
    assert lines[1] == b"Delivered-To: alice@postroom.test"
    assert lines[2].startswith(b"Received: from client.example ([127.0.0.1])")
    assert b"by mx.postroom.test (postroom) with ESMTP id " in stored
    assert b"\n.starts with a dot\n..two dots\n.\nlast line\n" in stored


def test_queue_id_in_reply_is_the_id_in_received(server: ServerThread, config: Config) -> None:
    host, port = server.address
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("c")
        client.mail("s@example.test")
        client.rcpt("bob@postroom.test")
        code, text = client.data(b"Subject: id\r\n\r\nx\r\n")
    assert code == 250
    match = re.fullmatch(rb"2\.0\.0 Ok: queued as (\S+)", text)
    assert match is not None
    (path,) = wait_for(lambda: maildir_messages(config, "bob@postroom.test"), what="delivery")
    assert b" id " + match.group(1) + b"\n" in path.read_bytes()
    assert match.group(1).decode() in server.log_text


def test_smtplib_bdat_is_not_used_but_8bit_and_smtputf8_are(server: ServerThread, config: Config) -> None:
    host, port = server.address
    body = "Subject: Grüße\r\n\r\nÄrger über Öl\r\n".encode()
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("c")
        client.sendmail(
            "jörg@example.test", ["alice@postroom.test"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"]
        )
    (path,) = wait_for(lambda: maildir_messages(config, "alice@postroom.test"), what="delivery")
    stored = path.read_bytes()
    assert "Ärger über Öl".encode() in stored
    assert "Return-Path: <jörg@example.test>".encode() in stored
    assert b"with UTF8SMTP id" in stored


@needs_swaks
@pytest.mark.parametrize("pipeline", [False, True])
def test_swaks_delivers(server: ServerThread, config: Config, pipeline: bool) -> None:
    host, port = server.address
    args = [
        "swaks",
        "--server",
        f"{host}:{port}",
        "--from",
        "s@example.test",
        "--to",
        "team@postroom.test",
        "--helo",
        "swaks.example",
        "--header",
        "Subject: via swaks",
        "--body",
        "swaks body",
        "--timeout",
        "10",
    ]
    if pipeline:
        args.append("--pipeline")
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    for user in ("alice", "bob"):
        (path,) = wait_for(lambda u=user: maildir_messages(config, f"{u}@postroom.test"), what=user)
        assert b"swaks body" in path.read_bytes()


@needs_swaks
def test_swaks_sees_refusals(server: ServerThread) -> None:
    host, port = server.address
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"{host}:{port}",
            "--from",
            "s@example.test",
            "--to",
            "x@elsewhere.test",
            "--timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "554 5.7.1 Relay access denied" in result.stdout
