"""The DSN extension (RFC 3461) end to end: smtplib gives NOTIFY/ORCPT/RET/ENVID to postroom A (127.0.0.2),
which honours them in its own reports and passes them on to a next hop (a recording SMTP server on
127.0.0.6) that offers DSN, or reports "relayed" to one that does not."""

from __future__ import annotations

import email
import email.message
import email.policy
import smtplib
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_relay import SENDER, _message, _one_message, _queue_empty, _report, _sender_config, inject
from tests.helpers.dns import DnsServer
from tests.helpers.server import maildir_messages, server_thread, wait_for


class Recorder(socketserver.ThreadingTCPServer):
    """Takes every message (250 to everything), keeps the MAIL and RCPT lines and the bodies."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, extensions: tuple[str, ...]) -> None:
        super().__init__(("127.0.0.6", 0), _RecorderHandler)
        self.extensions = extensions
        self.lines: list[str] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()


class _RecorderHandler(socketserver.StreamRequestHandler):
    server: Recorder

    def handle(self) -> None:
        self.wfile.write(b"220 recorder.test ESMTP\r\n")
        while line := self.rfile.readline(2000):
            verb = line[:4].upper()
            if verb == b"EHLO":
                lines = ["recorder.test", *self.server.extensions]
                self.wfile.write(
                    "".join(f"250-{x}\r\n" for x in lines[:-1]).encode() + f"250 {lines[-1]}\r\n".encode()
                )
            elif verb in (b"MAIL", b"RCPT"):
                with self.server.lock:
                    self.server.lines.append(line.decode().strip())
                self.wfile.write(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                self.wfile.write(b"354 go on\r\n")
                body = b"".join(iter(lambda: self.rfile.readline(10000), b".\r\n"))
                with self.server.lock:
                    self.server.bodies.append(body)
                self.wfile.write(b"250 2.0.0 Ok: queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            else:
                self.wfile.write(b"250 2.0.0 Ok\r\n")


@pytest.fixture(params=[("PIPELINING", "DSN"), ("PIPELINING",)], ids=["dsn", "no-dsn"])
def recorder(request: pytest.FixtureRequest, dns_server: DnsServer) -> Iterator[Recorder]:
    server = Recorder(request.param)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    dns_server.add("far.test", "MX", "10 mx.far.test.").add("mx.far.test", "A", "127.0.0.6")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_notify_success_for_a_local_recipient_brings_a_delivered_notice(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    config = _sender_config(tmp_path, dns_server, 2525)
    with server_thread(config) as sender, smtplib.SMTP(*sender.address, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("dsn")
        client.sendmail(
            SENDER,
            ["bob@postroom.test"],
            _message("tell me"),
            mail_options=["RET=HDRS", "ENVID=E+2B1"],
            rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;Robert@postroom.test"],
        )
        notice = _one_message(config, SENDER, what="the success notice")
    assert len(maildir_messages(config, "bob@postroom.test")) == 1
    assert notice["Subject"] == "Successful Mail Delivery Report"
    fields, recipients, original = _report(notice)
    assert fields["Original-Envelope-Id"] == "E+1"
    assert recipients[0]["Original-Recipient"] == "rfc822;Robert@postroom.test"
    assert recipients[0]["Final-Recipient"] == "rfc822; bob@postroom.test"
    assert recipients[0]["Action"] == "delivered"
    assert "Subject: tell me" in original


def test_notify_never_means_no_bounce(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("nomail.test", "MX", "0 .")
    config = _sender_config(tmp_path, dns_server, 2525, smtp={"relay_networks": ["127.0.0.0/8"]})
    with server_thread(config) as sender, smtplib.SMTP(*sender.address, timeout=10) as client:
        client.sendmail(SENDER, ["x@nomail.test"], _message("hush"), rcpt_options=["NOTIFY=NEVER"])
        wait_for(lambda: "delivery.failed" in sender.log_text, what="the failure")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert "delivery.bounced" not in log
    assert not maildir_messages(config, SENDER)


def test_dsn_parameters_go_on_to_a_next_hop_that_offers_dsn_else_relayed_is_reported(
    tmp_path: Path, dns_server: DnsServer, recorder: Recorder
) -> None:
    port = recorder.server_address[1]
    config = _sender_config(tmp_path, dns_server, port, smtp={"relay_networks": ["127.0.0.0/8"]})
    with server_thread(config) as sender, smtplib.SMTP(*sender.address, timeout=10) as client:
        client.sendmail(
            SENDER,
            ["Carol@far.test"],
            _message("onwards"),
            mail_options=["RET=FULL", "ENVID=abc"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
        )
        wait_for(lambda: recorder.bodies, what="delivery to the next hop")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        if "DSN" not in recorder.extensions:
            notice = _one_message(config, SENDER, what="the relayed notice")
            _fields, recipients, _original = _report(notice)
            assert recipients[0]["Action"] == "relayed"
            assert recipients[0]["Remote-MTA"] == "dns; mx.far.test"
            log = sender.log_text
    mail, rcpt = recorder.lines
    if "DSN" in recorder.extensions:
        assert mail.endswith(" RET=FULL ENVID=abc")
        assert rcpt == "RCPT TO:<Carol@far.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Carol@far.test"
        assert not maildir_messages(config, SENDER)  # the next hop reports success itself
    else:
        assert mail.startswith("MAIL FROM:<alice@postroom.test>")
        assert "RET=" not in mail
        assert rcpt == "RCPT TO:<Carol@far.test>"
        assert "delivery.bounced" in log


def test_one_delay_warning_then_the_failure(tmp_path: Path, dns_server: DnsServer) -> None:
    dns_server.add("down.test", "MX", "10 mx.down.test.").add("mx.down.test", "A", "127.0.0.4")
    queue = {"retry_schedule": [0.3], "max_lifetime": 3, "delay_warning": 0.5}
    config = _sender_config(tmp_path, dns_server, 2525, queue=queue)
    with server_thread(config) as sender:
        inject(sender, "x@down.test", body=_message("slow going"))
        wait_for(lambda: len(maildir_messages(config, SENDER)) == 2, what="the warning and the bounce")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
    reports = [_one_report(path) for path in maildir_messages(config, SENDER)]
    assert sorted(subject for subject, _action in reports) == [
        "Delayed Mail (still being retried)",
        "Undelivered Mail Returned to Sender",
    ]
    assert sorted(action for _subject, action in reports) == ["delayed", "failed"]


def _one_report(path: Path) -> tuple[str, str]:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    _fields, recipients, _original = _report(message)
    if recipients[0]["Action"] == "delayed":
        assert recipients[0]["Will-Retry-Until"]
    return str(message["Subject"]), str(recipients[0]["Action"])
