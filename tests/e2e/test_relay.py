"""Remote delivery on a little Internet on loopback: postroom A (127.0.0.2) carries mail to postroom B
(127.0.0.3) or to a scripted SMTP server, found through a real loopback DNS server; bounces come back to
A's local sender as RFC 3464 reports."""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
import socketserver
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from postroom.config import Config
from postroom.queue import Envelope, Queue, Recipient
from tests.e2e.conftest import add_accounts
from tests.helpers.dns import DnsServer
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for

SENDER = "alice@postroom.test"


def _remote_config(tmp_path: Path, **sections: Any) -> Config:
    """Instance B: mx.remote.test on 127.0.0.3, keeping mail for remote.test and implicit.test."""
    config = make_config(
        tmp_path / "b",
        hostname="mx.remote.test",
        smtp={"listen": "127.0.0.3:0"},
        local={"domains": ["remote.test", "implicit.test"]},
        **sections,
    )
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("bob@remote.test")
        accounts.add_mailbox("bob@implicit.test")
    finally:
        db.close()
    return config


def _sender_config(tmp_path: Path, dns_server: DnsServer, port: int, **sections: Any) -> Config:
    """Instance A: mx.postroom.test on 127.0.0.2, delivering to MX hosts on ``port``."""
    delivery = {
        "smtp_port": port,
        "connect_timeout": 5,
        "command_timeout": 10,
        **sections.pop("delivery", {}),
    }
    queue = {"retry_schedule": [0.5], **sections.pop("queue", {})}
    smtp = {"listen": "127.0.0.2:0", **sections.pop("smtp", {})}
    config = make_config(
        tmp_path / "a",
        smtp=smtp,
        dns={"nameservers": [dns_server.address], "timeout": 2},
        delivery=delivery,
        queue=queue,
        **sections,
    )
    add_accounts(config)
    return config


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[ServerThread]:
    with server_thread(_remote_config(tmp_path)) as running:
        yield running


def _message(subject: str, *, received: int = 0) -> bytes:
    trace = b"".join(
        b"Received: from hop%d by hop%d; Thu, 1 Jan 2024 00:00:00 +0000\r\n" % (n, n) for n in range(received)
    )
    return trace + f"From: <{SENDER}>\r\nSubject: {subject}\r\n\r\nHello over there.\r\n".encode()


def inject(server: ServerThread, *rcpts: str, body: bytes, sender: str = SENDER) -> str:
    """Queue a message for remote recipients straight through the Queue (as the session will)."""

    async def commit(queue: Queue) -> str:
        writer = queue.open_spool()
        writer.write(body)
        recipients = tuple(
            Recipient(
                address=rcpt,
                mailbox=rcpt.rpartition("@")[0] + "@" + rcpt.rpartition("@")[2].lower(),
                transport="smtp",
            )
            for rcpt in rcpts
        )
        return await queue.commit(writer, Envelope(sender=sender, recipients=recipients))

    assert server.app is not None
    return str(server.call(commit, server.app.queue))


def _queue_empty(server: ServerThread) -> bool:
    assert server.app is not None
    return server.app.queue.message_count() == 0


def _one_message(config: Config, address: str, *, what: str) -> email.message.EmailMessage:
    path = wait_for(lambda: maildir_messages(config, address), what=what)[0]
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def _report(
    dsn: email.message.EmailMessage,
) -> tuple[email.message.Message, list[email.message.Message], str]:
    """(per-message fields, per-recipient field blocks, original headers) of a delivery-status report."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, headers = dsn.get_payload()  # type: ignore[misc]
    assert human.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert headers.get_content_type() == "text/rfc822-headers"
    blocks = status.get_payload()
    return blocks[0], blocks[1:], headers.get_payload()


# --- a scripted SMTP server: real sockets, real SMTP, answers from a script -----------------------------


class ScriptedSmtp(socketserver.ThreadingTCPServer):
    """Answers RCPTs from ``rcpt_replies`` (then 250), counts connections, keeps each received body."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, rcpt_replies: list[str], *, extensions: tuple[str, ...] = ()) -> None:
        super().__init__((host, 0), _ScriptedHandler)
        self.rcpt_replies = rcpt_replies
        self.extensions = extensions
        self.connections = 0
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _ScriptedHandler(socketserver.StreamRequestHandler):
    server: ScriptedSmtp

    def _send(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        self._send("220 scripted.test ESMTP")
        while line := self.rfile.readline(1000):
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                for keyword in self.server.extensions:
                    self._send(f"250-{keyword}")
                self._send("250 scripted.test")
            elif verb == b"RCPT":
                with self.server.lock:
                    reply = self.server.rcpt_replies.pop(0) if self.server.rcpt_replies else "250 2.1.5 Ok"
                self._send(reply)
            elif verb == b"DATA":
                self._send("354 go on")
                body = b"".join(iter(lambda: self.rfile.readline(10000), b".\r\n"))
                with self.server.lock:
                    self.server.bodies.append(body)
                self._send("250 2.0.0 Ok: queued")
            elif verb == b"QUIT":
                self._send("221 2.0.0 Bye")
                return
            else:
                self._send("250 2.0.0 Ok")


@pytest.fixture
def scripted() -> Iterator[ScriptedSmtp]:
    server = ScriptedSmtp("127.0.0.5", ["451 4.3.0 Try again later"])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the tests -----------------------------------------------------------------------------------------


def test_first_mx_down_delivers_to_the_next_by_preference(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("remote.test", "MX", "20 mx.remote.test.").add("remote.test", "MX", "10 down.remote.test.")
    dns_server.add("down.remote.test", "A", "127.0.0.4").add("mx.remote.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1])
    with server_thread(config) as sender:
        queue_id = inject(sender, "Bob@Remote.test", body=_message("by preference"))
        message = _one_message(remote.config, "bob@remote.test", what="delivery to B")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert message["Subject"] == "by preference"
    assert "Received: from mx.postroom.test" in message.as_string()
    assert "delivery.host_failed" in log
    assert "127.0.0.4" in log
    assert any("delivery.transaction" in line and queue_id in line for line in log.splitlines())


def test_implicit_mx_and_one_transaction_for_recipients_of_one_domain(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("implicit.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1])
    with server_thread(config) as sender:
        inject(sender, "bob@implicit.test", "Bob@implicit.test", body=_message("implicit"))
        _one_message(remote.config, "bob@implicit.test", what="delivery to B")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert log.count("delivery.transaction ") == 1
    assert "rcpts=2" in log


def test_null_mx_bounces_to_the_local_sender(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    config = _sender_config(tmp_path, dns_server, 2525)
    with server_thread(config) as sender:
        queue_id = inject(sender, "someone@nomail.test", body=_message("to nowhere"))
        dsn = _one_message(config, SENDER, what="the bounce")
    fields, recipients, original = _report(dsn)
    assert dsn["From"].addresses[0].username == "MAILER-DAEMON"
    assert fields["Reporting-MTA"] == "dns; mx.postroom.test"
    assert fields["X-Postroom-Queue-ID"] == queue_id
    assert recipients[0]["Final-Recipient"] == "rfc822; someone@nomail.test"
    assert recipients[0]["Action"] == "failed"
    assert recipients[0]["Status"] == "5.1.10"
    assert "Subject: to nowhere" in original


def test_a_5xx_comes_back_as_a_dsn_and_other_recipients_are_delivered(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1])
    with server_thread(config) as sender:
        inject(sender, "nobody@remote.test", "bob@remote.test", body=_message("partly"))
        dsn = _one_message(config, SENDER, what="the bounce")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
    assert len(maildir_messages(remote.config, "bob@remote.test")) == 1
    assert dsn["To"] == SENDER
    assert "Return-Path: <>" in dsn.as_string()
    _fields, recipients, original = _report(dsn)
    assert len(recipients) == 1
    assert recipients[0]["Final-Recipient"] == "rfc822; nobody@remote.test"
    assert recipients[0]["Status"] == "5.1.1"
    assert recipients[0]["Remote-MTA"] == "dns; mx.remote.test"
    assert recipients[0]["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert "Subject: partly" in original


def test_a_4xx_is_retried_then_delivered(
    tmp_path: Path, dns_server: DnsServer, scripted: ScriptedSmtp
) -> None:
    dns_server.add("scripted.test", "MX", "5 mx.scripted.test.").add("mx.scripted.test", "A", "127.0.0.5")
    # connection_idle 0: the retry opens a connection of its own (reuse is tested in test_connection_reuse)
    config = _sender_config(tmp_path, dns_server, scripted.port, delivery={"connection_idle": 0})
    with server_thread(config) as sender:
        inject(sender, "carol@scripted.test", body=_message("second time lucky"))
        wait_for(lambda: scripted.bodies, what="the retry to deliver")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert scripted.connections == 2
    assert "delivery.deferred" in log
    assert "451 4.3.0" in log
    assert b"Subject: second time lucky" in scripted.bodies[0]
    assert not maildir_messages(config, SENDER)  # no bounce for a delivered message


def test_a_message_that_never_gets_through_expires_into_a_dsn(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("down.test", "MX", "10 mx.down.test.").add("mx.down.test", "A", "127.0.0.4")
    config = _sender_config(tmp_path, dns_server, 2525, queue={"retry_schedule": [0.3], "max_lifetime": 1.5})
    with server_thread(config) as sender:
        inject(sender, "x@down.test", body=_message("too late"))
        dsn = _one_message(config, SENDER, what="the expiry bounce")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
    _fields, recipients, _original = _report(dsn)
    assert recipients[0]["Action"] == "failed"
    assert recipients[0]["Status"].startswith("4.")
    assert "expired" in dsn.get_payload()[0].get_content()  # type: ignore[index]


def test_too_many_received_headers_is_a_loop(
    tmp_path: Path, dns_server: DnsServer, scripted: ScriptedSmtp
) -> None:
    dns_server.add("scripted.test", "MX", "5 mx.scripted.test.").add("mx.scripted.test", "A", "127.0.0.5")
    config = _sender_config(tmp_path, dns_server, scripted.port, delivery={"max_received": 5})
    with server_thread(config) as sender:
        inject(sender, "carol@scripted.test", body=_message("round and round", received=6))
        dsn = _one_message(config, SENDER, what="the loop bounce")
    _fields, recipients, _original = _report(dsn)
    assert recipients[0]["Status"] == "5.4.6"
    assert scripted.connections == 0


def test_a_bounce_is_never_bounced(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    config = _sender_config(tmp_path, dns_server, 2525)
    with server_thread(config) as sender:
        inject(sender, "someone@nomail.test", body=_message("from the void"), sender="")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert "delivery.failed" in log
    assert "delivery.bounced" not in log


def test_our_own_domains_never_leave_over_the_network(tmp_path: Path, dns_server: DnsServer) -> None:
    config = _sender_config(tmp_path, dns_server, 2525)
    with server_thread(config) as sender:
        inject(sender, "Bob@Postroom.test", body=_message("stay home"))
        _one_message(config, "bob@postroom.test", what="local delivery")
    assert not dns_server.queries


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_starttls_with_a_verified_certificate_for_a_require_tls_domain(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA
) -> None:
    cert = ca.issue_cert("mx.remote.test")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    b_config = _remote_config(tmp_path, tls={"cert_file": str(cert_file), "key_file": str(key_file)})
    with server_thread(b_config) as remote:
        config = _sender_config(
            tmp_path,
            dns_server,
            remote.address[1],
            delivery={"require_tls": ["remote.test"], "tls_ca_file": str(ca_file)},
        )
        with server_thread(config) as sender:
            inject(sender, "bob@remote.test", body=_message("secret"))
            message = _one_message(b_config, "bob@remote.test", what="delivery over TLS")
            log = sender.log_text
    assert "tls=True" in log
    assert "with ESMTPS" in message.as_string()


def test_a_require_tls_domain_is_not_sent_to_a_server_without_starttls(
    tmp_path: Path, dns_server: DnsServer, scripted: ScriptedSmtp
) -> None:
    dns_server.add("scripted.test", "MX", "5 mx.scripted.test.").add("mx.scripted.test", "A", "127.0.0.5")
    config = _sender_config(tmp_path, dns_server, scripted.port, delivery={"require_tls": ["scripted.test"]})
    with server_thread(config) as sender:
        inject(sender, "carol@scripted.test", body=_message("not in clear"))
        wait_for(lambda: "delivery.deferred" in sender.log_text, what="the deferral")
        log = sender.log_text
        assert sender.app is not None
        assert sender.app.queue.message_count() == 1
    assert "TLS is required" in log
    assert not scripted.bodies


def test_session_relays_for_relay_networks_to_the_remote_mx(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1], smtp={"relay_networks": ["127.0.0.0/8"]})
    with server_thread(config) as sender, smtplib.SMTP(*sender.address, timeout=10) as client:
        client.sendmail(SENDER, ["bob@remote.test"], _message("through the session"))
        message = _one_message(remote.config, "bob@remote.test", what="relay through A")
    assert message["Subject"] == "through the session"


def test_an_authenticated_user_relays_through_submission_and_strangers_do_not(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1])
    accounts, db = open_accounts(config)
    try:
        accounts.set_password(SENDER, hash_password("pw"))
    finally:
        db.close()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the relay is under test here; verification is in test_submission
    with server_thread(config) as sender:
        assert sender.app is not None
        with smtplib.SMTP(*sender.address, timeout=10) as stranger:
            stranger.ehlo("stranger.example")
            stranger.mail("spam@example.test")
            assert stranger.rcpt("bob@remote.test")[0] == 554  # the MX port is no open relay
        with smtplib.SMTP(*sender.app.address("submission"), timeout=10) as client:
            client.starttls(context=context)
            client.login(SENDER, "pw")
            client.sendmail(SENDER, ["bob@remote.test"], _message("submitted for the world"))
        message = _one_message(remote.config, "bob@remote.test", what="relay through submission")
    assert message["Subject"] == "submitted for the world"
    assert "with ESMTPSA" in message.as_string()
