"""Smarthost mode: postroom A sends all remote mail to ``relay_host`` (no MX lookup), here postroom B's
submission listener (STARTTLS + AUTH, a trustme certificate for 127.0.0.3), logging in as relay_user."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from postroom.config import Config
from tests.e2e.test_relay import _message, _one_message, _queue_empty, _remote_config, _sender_config, inject
from tests.e2e.test_relay_dsn import Recorder
from tests.helpers.dns import DnsServer
from tests.helpers.server import ServerThread, server_thread, wait_for

RELAY_USER = "carol@remote.test"


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.3")
    paths = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths


@pytest.fixture
def upstream(tmp_path: Path, ca_file: tuple[Path, Path, Path]) -> Iterator[ServerThread]:
    cert, key, _ca = ca_file
    config = _remote_config(
        tmp_path, tls={"cert_file": str(cert), "key_file": str(key)}, submission={"listen": "127.0.0.3:0"}
    )
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox(RELAY_USER)
        accounts.set_password(RELAY_USER, hash_password("s3cret"))
    finally:
        db.close()
    with server_thread(config) as running:
        yield running


def _relay_config(
    tmp_path: Path, dns_server: DnsServer, port: int, ca: Path, password: str, *, host: str = "127.0.0.3"
) -> Config:
    password_file = tmp_path / "relay-password"
    password_file.write_text(password + "\n")
    delivery = {
        "relay_host": f"{host}:{port}",
        "relay_user": RELAY_USER,
        "relay_password_file": str(password_file),
        "tls_ca_file": str(ca),
    }
    return _sender_config(tmp_path, dns_server, 2525, delivery=delivery)


def _submission_port(upstream: ServerThread) -> int:
    assert upstream.app is not None
    return upstream.app.address("submission")[1]


def test_everything_goes_through_the_smarthost_with_auth_over_tls(
    tmp_path: Path, dns_server: DnsServer, upstream: ServerThread, ca_file: tuple[Path, Path, Path]
) -> None:
    config = _relay_config(tmp_path, dns_server, _submission_port(upstream), ca_file[2], "s3cret")
    with server_thread(config) as sender:
        inject(sender, "bob@remote.test", body=_message("via the smarthost"), sender=RELAY_USER)
        message = _one_message(upstream.config, "bob@remote.test", what="delivery through the smarthost")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert message["Subject"] == "via the smarthost"
    assert "with ESMTPSA" in message.as_string()  # B saw TLS and AUTH
    assert not dns_server.queries  # no MX lookup
    assert "tls=True" in log
    assert "s3cret" not in log + upstream.log_text


def test_a_wrong_password_defers_the_message(
    tmp_path: Path, dns_server: DnsServer, upstream: ServerThread, ca_file: tuple[Path, Path, Path]
) -> None:
    config = _relay_config(tmp_path, dns_server, _submission_port(upstream), ca_file[2], "wrong")
    with server_thread(config) as sender:
        inject(sender, "bob@remote.test", body=_message("not with that password"), sender=RELAY_USER)
        wait_for(lambda: "delivery.deferred" in sender.log_text, what="the deferral")
        log = sender.log_text
        assert sender.app is not None
        assert sender.app.queue.message_count() == 1
    assert "refused AUTH" in log
    assert "535" in log


def test_credentials_are_never_sent_to_a_smarthost_without_starttls(
    tmp_path: Path, dns_server: DnsServer, ca_file: tuple[Path, Path, Path]
) -> None:
    plain = Recorder(("PIPELINING", "AUTH PLAIN LOGIN"))
    thread = threading.Thread(target=plain.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = plain.server_address[1]
        config = _relay_config(tmp_path, dns_server, port, ca_file[2], "s3cret", host="127.0.0.6")
        with server_thread(config) as sender:
            inject(sender, "bob@remote.test", body=_message("not in clear"), sender=RELAY_USER)
            wait_for(lambda: "delivery.deferred" in sender.log_text, what="the deferral")
            log = sender.log_text
    finally:
        plain.shutdown()
        plain.server_close()
        thread.join(5)
    assert "does not offer STARTTLS" in log
    assert not plain.lines  # no MAIL, and no AUTH (it would be answered but never recorded as sent)
