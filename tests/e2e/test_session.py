"""SMTP conversations with a real server, byte by byte: replies, sequences, and every error path."""

from __future__ import annotations

import socket
import time

import pytest

from postroom.config import Config
from tests.helpers.server import ServerThread, maildir_messages, wait_for
from tests.helpers.transcript import Transcript


def greeted(server: ServerThread) -> Transcript:
    t = Transcript(server.address)
    t.expect("220 mx.postroom.test ESMTP*")
    return t


def start_data(t: Transcript) -> None:
    """EHLO, MAIL, RCPT to alice, DATA: the session is then reading a message."""
    for command, reply in (
        ("EHLO c", "250 *"),
        ("MAIL FROM:<a@example.test>", "250 *"),
        ("RCPT TO:<alice@postroom.test>", "250 *"),
        ("DATA", "354 *"),
    ):
        t.send(command)
        t.expect(reply)


def test_ehlo_lists_the_extensions(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send("EHLO client.example")
        reply = t.expect("250 *")
        for keyword in (
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ):
            assert f"250-{keyword}" in reply or f"250 {keyword}" in reply
        t.send("QUIT")
        t.expect("221 2.0.0 *")
        t.expect_closed()


def test_pipelined_transaction_is_answered_in_order(server: ServerThread, config: Config) -> None:
    with greeted(server) as t:
        t.send("EHLO client.example")
        t.expect("250 *")
        t.send_raw(
            b"MAIL FROM:<sender@example.test>\r\n"
            b"RCPT TO:<alice@postroom.test>\r\n"
            b"RCPT TO:<nobody@postroom.test>\r\n"
            b"RCPT TO:<bob@postroom.test>\r\n"
            b"DATA\r\n"
        )
        t.expect("250 2.1.0 *")
        t.expect("250 2.1.5 *")
        t.expect("550 5.1.1 *")
        t.expect("250 2.1.5 *")
        t.expect("354 *")
        t.send_raw(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        t.expect("250 2.0.0 Ok: queued as *")
        t.expect("221 *")
    for user in ("alice", "bob"):
        wait_for(lambda u=user: maildir_messages(config, f"{u}@postroom.test"), what=f"{user}'s mail")


def test_bdat_chunks_make_one_message(server: ServerThread, config: Config) -> None:
    body = b"Subject: chunks\r\n\r\nfirst part\r\n.not stuffed\r\n"
    with greeted(server) as t:
        t.send("EHLO client.example")
        t.expect("250 *")
        t.send("MAIL FROM:<sender@example.test> BODY=BINARYMIME")
        t.expect("250 *")
        t.send("RCPT TO:<alice@postroom.test>")
        t.expect("250 *")
        t.send_raw(f"BDAT {len(body[:20])}\r\n".encode() + body[:20])
        t.expect("250 2.0.0 *")
        rest = body[20:]
        t.send_raw(f"BDAT {len(rest)} LAST\r\n".encode() + rest)
        t.expect("250 2.0.0 Ok: queued as *")
    (path,) = wait_for(lambda: maildir_messages(config, "alice@postroom.test"), what="delivery")
    assert path.read_bytes().endswith(b"first part\n.not stuffed\n")


def test_bdat_without_recipients_never_reads_chunk_as_commands(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send("EHLO client.example")
        t.expect("250 *")
        payload = b"RSET\r\nQUIT\r\n"
        t.send_raw(f"BDAT {len(payload)} LAST\r\n".encode() + payload)
        t.expect("503 5.5.1 *")
        t.send("NOOP")
        t.expect("250 2.0.0 *")


@pytest.mark.parametrize(
    ("commands", "expected"),
    [
        (["MAIL FROM:<a@example.test>"], "503 5.5.1 *"),  # before EHLO
        (["EHLO c", "RCPT TO:<alice@postroom.test>"], "503 5.5.1 *"),
        (["EHLO c", "DATA"], "503 5.5.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "MAIL FROM:<b@example.test>"], "503 5.5.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "DATA"], "503 5.5.1 *"),
        (["EHLO c", "MAIL FROM:a@example.test"], "501 5.*"),
        (["EHLO c", "MAIL FROM:<a@example.test> SIZE=99999999999"], "552 5.3.4 *"),
        (["EHLO c", "MAIL FROM:<a@example.test> FOO=BAR"], "555 5.5.4 *"),
        (["EHLO c", "MAIL FROM:<a@example.test> BODY=9BIT"], "501 5.5.4 *"),
        (["EHLO c", "MAIL FROM:<jörg@example.test>"], "553 5.6.7 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "RCPT TO:<nobody@postroom.test>"], "550 5.1.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "RCPT TO:<x@elsewhere.test>"], "554 5.7.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "RCPT TO:<@relay.test:x@elsewhere.test>"], "554 5.7.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "RCPT TO:<x%elsewhere.test@postroom.test>"], "550 5.1.1 *"),
        (["EHLO c", "MAIL FROM:<a@example.test>", "RCPT TO:<>"], "501 5.*"),
        (["EHLO"], "501 5.5.4 *"),
        (["FROB"], "500 5.5.2 *"),
        (["VRFY alice"], "252 2.5.0 *"),
        (["HELP"], "214 2.0.0 *"),
        (["NOOP"], "250 2.0.0 *"),
        (["EHLO c", "RSET"], "250 2.0.0 *"),
    ],
)
def test_replies(server: ServerThread, commands: list[str], expected: str) -> None:
    with greeted(server) as t:
        for command in commands[:-1]:
            t.send(command)
            t.read_reply()
        t.send(commands[-1])
        t.expect(expected)
        t.send("NOOP")  # the session goes on after every refusal
        t.expect("250 *")


def test_null_sender_postmaster_plus_and_alias_are_accepted(server: ServerThread, config: Config) -> None:
    with greeted(server) as t:
        t.send("EHLO c")
        t.expect("250 *")
        t.send("MAIL FROM:<>")
        t.expect("250 2.1.0 *")
        for rcpt in (
            "<Postmaster>",
            "<postmaster@other.test>",
            "<bob+lists@postroom.test>",
            "<info@postroom.test>",
        ):
            t.send(f"RCPT TO:{rcpt}")
            t.expect("250 2.1.5 *")
        t.send("DATA")
        t.expect("354 *")
        t.send_raw(b"Subject: bounce\r\n\r\nbody\r\n.\r\n")
        t.expect("250 2.0.0 *")
    for address in (
        "postmaster@postroom.test",
        "postmaster@other.test",
        "bob@postroom.test",
        "alice@postroom.test",
    ):
        (path,) = wait_for(lambda a=address: maildir_messages(config, a), what=address)
        assert path.read_bytes().startswith(b"Return-Path: <>\n")


def test_command_line_over_512_octets_is_500_5_5_6(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send("NOOP " + "x" * 600)
        t.expect("500 5.5.6 *")
        t.send("NOOP")
        t.expect("250 *")


def test_command_with_bare_lf_is_refused(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send_raw(b"NOOP\n")
        t.expect("500 5.5.2 *")


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"])
def test_smtp_smuggling_never_splits_a_message(server: ServerThread, config: Config, smuggle: bytes) -> None:
    with greeted(server) as t:
        start_data(t)
        t.send_raw(
            b"Subject: one\r\n\r\nfirst"
            + smuggle
            + b"MAIL FROM:<admin@postroom.test>\r\nRCPT TO:<bob@postroom.test>\r\nDATA\r\n"
            + b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n"
        )
        t.expect("550 5.6.0 *")  # one reply for one message, refused as a whole
        t.send("NOOP")
        t.expect("250 *")
    time.sleep(0.5)
    assert maildir_messages(config, "bob@postroom.test") == []
    assert maildir_messages(config, "alice@postroom.test") == []


def test_too_many_errors_closes_with_421(server: ServerThread) -> None:
    with greeted(server) as t:
        for _ in range(10):
            t.send("FROB")
            t.expect("500 *")
        t.send("FROB")
        t.expect("421 4.7.0 *")
        t.expect_closed()


def test_http_request_is_refused_and_closed(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send_raw(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n")
        t.expect("5* *")
        t.expect_closed()


@pytest.mark.parametrize("config_overrides", [{"smtp": {"command_timeout": 1}}])
def test_dribbling_client_is_cut_off_at_the_command_deadline(server: ServerThread) -> None:
    with greeted(server) as t:
        started = time.monotonic()
        for char in b"NOOP":  # one byte every 0.4 s: every byte resets an idle timer, not a deadline
            t.send_raw(bytes([char]))
            time.sleep(0.4)
        t.expect("421 4.4.2 *")
        t.expect_closed()
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("config_overrides", [{"smtp": {"relay_networks": ["127.0.0.0/8"]}}])
def test_clients_in_relay_networks_may_relay_but_not_by_tricks(server: ServerThread) -> None:
    with greeted(server) as t:
        t.send("EHLO c")
        t.expect("250 *")
        t.send("MAIL FROM:<app@postroom.test>")
        t.expect("250 *")
        t.send("RCPT TO:<someone@elsewhere.test>")
        t.expect("250 2.1.5 *")
        t.send("RCPT TO:<someone@[192.0.2.1]>")
        t.expect("554 5.7.1 *")
        t.send("RSET")
        t.expect("250 *")


@pytest.mark.parametrize(
    "rcpt",
    [
        "<someone@elsewhere.test>",
        "<@postroom.test:someone@elsewhere.test>",  # source route through us
        '<"someone@elsewhere.test"@postroom.test>',  # quoted @
        "<someone%elsewhere.test@postroom.test>",  # percent hack
        "<elsewhere.test!someone@postroom.test>",  # bang path
        "<someone@elsewhere.test@postroom.test>",
        "<someone@postroom.test.elsewhere.test>",
    ],
)
def test_open_relay_tricks_are_refused_on_the_mx_port(server: ServerThread, rcpt: str) -> None:
    with greeted(server) as t:
        t.send("EHLO c")
        t.expect("250 *")
        t.send("MAIL FROM:<a@example.test>")
        t.expect("250 *")
        t.send(f"RCPT TO:{rcpt}")
        reply = t.read_reply()
        assert reply[:1] == "5", reply  # refused: unknown user, relay denied or bad syntax
        t.send("NOOP")
        t.expect("250 *")


@pytest.mark.parametrize("config_overrides", [{"smtp": {"data_timeout": 1}}])
def test_silent_client_inside_data_is_cut_off(server: ServerThread) -> None:
    with greeted(server) as t:
        start_data(t)
        t.send_raw(b"Subject: slow\r\n")
        t.expect("421 4.4.2 *")
        t.expect_closed()


@pytest.mark.parametrize("config_overrides", [{"smtp": {"max_connections_per_ip": 2}}])
def test_connections_beyond_the_per_ip_cap_get_421(server: ServerThread) -> None:
    first, second = greeted(server), greeted(server)
    try:
        with Transcript(server.address) as third:
            third.expect("421 4.7.0 *")
            third.expect_closed()
        second.send("QUIT")
        second.expect("221 *")
        second.expect_closed()

        def admitted() -> bool:
            with Transcript(server.address) as again:
                reply = again.read_reply()
                return reply.startswith("220")

        wait_for(admitted, what="a freed slot")
    finally:
        first.close()
        second.close()


def test_message_over_size_limit_is_552(server: ServerThread) -> None:
    with greeted(server) as t:
        start_data(t)
        line = b"x" * 998 + b"\r\n"
        chunk = line * 1024  # 1 MiB
        for _ in range(55):  # 55 MB > the 50 MiB default
            t.send_raw(chunk)
        t.send_raw(b".\r\n")
        t.expect("552 5.3.4 *")


def test_long_text_line_is_refused_by_default(server: ServerThread) -> None:
    with greeted(server) as t:
        start_data(t)
        t.send_raw(b"Subject: long\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n")
        t.expect("550 5.5.6 *")


def test_idle_session_is_told_421_at_shutdown(server: ServerThread) -> None:
    t = greeted(server)
    server.stop()
    t.expect("421 4.3.2 *")
    t.expect_closed()
    t.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=2).close()
