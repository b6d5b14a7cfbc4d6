"""Submission: STARTTLS (RFC 3207) and implicit TLS (RFC 8314), AUTH PLAIN/LOGIN (RFC 4954), and only
as yourself. Real TLS handshakes with a trustme CA; real clients (smtplib, swaks)."""

from __future__ import annotations

import base64
import smtplib
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from postroom.config import Config
from tests.helpers.peers import needs
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for
from tests.helpers.transcript import Transcript

needs_swaks = needs("swaks")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(tmp_path: Path, ca: trustme.CA) -> Iterator[ServerThread]:
    cert = ca.issue_cert("mx.postroom.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    config = make_config(tmp_path, tls={"cert_file": str(cert_file), "key_file": str(key_file)})
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("alice@postroom.test", password_hash=hash_password(PASSWORD))
        accounts.add_mailbox("bob@postroom.test")
        accounts.add_alias("sales@postroom.test", "alice@postroom.test")
    finally:
        db.close()
    with server_thread(config) as running:
        yield running


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def _address(server: ServerThread, name: str) -> tuple[str, int]:
    assert server.app is not None
    return server.app.address(name)


def _config(server: ServerThread) -> Config:
    return server.config


def test_starttls_then_auth_plain_then_send_as_self(
    tls_server: ServerThread, client_context: ssl.SSLContext
) -> None:
    host, port = _address(tls_server, "submission")
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("laptop.example")
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # never a password in the clear (RFC 4954 4)
        client.starttls(context=client_context)
        client.ehlo("laptop.example")
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        client.login("alice@postroom.test", PASSWORD)
        client.sendmail("alice@postroom.test", ["bob@postroom.test"], b"Subject: hi\r\n\r\nfrom alice\r\n")
    (path,) = wait_for(lambda: maildir_messages(_config(tls_server), "bob@postroom.test"), what="delivery")
    stored = path.read_bytes()
    assert b"with ESMTPSA id" in stored
    assert b"\nDate: " in stored  # RFC 6409 8: completed at submission
    assert b"\nMessage-ID: <" in stored
    assert PASSWORD.encode() not in stored
    assert PASSWORD not in tls_server.log_text
    assert "auth.ok" in tls_server.log_text


def test_implicit_tls_and_auth_login_and_an_alias_as_sender(
    tls_server: ServerThread, client_context: ssl.SSLContext
) -> None:
    host, port = _address(tls_server, "submissions")
    with smtplib.SMTP_SSL(host, port, timeout=10, context=client_context) as client:
        client.ehlo("laptop.example")
        client.user, client.password = "alice@postroom.test", PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        client.sendmail("sales@postroom.test", ["bob@postroom.test"], b"Subject: s\r\n\r\nx\r\n")


@pytest.mark.parametrize(
    ("sender", "expected"),
    [("bob@postroom.test", 553), ("", 553), ("alice+news@postroom.test", 250)],
)
def test_only_your_own_addresses(
    tls_server: ServerThread, client_context: ssl.SSLContext, sender: str, expected: int
) -> None:
    host, port = _address(tls_server, "submission")
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.starttls(context=client_context)
        client.login("alice@postroom.test", PASSWORD)
        code, text = client.mail(sender)
        assert code == expected, text
        if expected == 553:
            assert text.startswith(b"5.7.1 ")


def test_submission_requires_auth_and_wrong_passwords_fail(
    tls_server: ServerThread, client_context: ssl.SSLContext
) -> None:
    host, port = _address(tls_server, "submission")
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.starttls(context=client_context)
        client.ehlo("laptop.example")
        assert client.mail("alice@postroom.test") == (530, b"5.7.0 Authentication required")
        client.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice@postroom.test", "wrong")
        assert refused.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("nobody@postroom.test", PASSWORD)
    assert "auth.failed" in tls_server.log_text
    assert "wrong" not in tls_server.log_text


def test_starttls_discards_commands_sent_before_the_handshake(tls_server: ServerThread) -> None:
    """CVE-2011-0411: plaintext pipelined after STARTTLS must not be executed after the handshake."""
    with Transcript(_address(tls_server, "submission")) as t:
        t.expect("220 *")
        t.send("EHLO attacker.example")
        t.expect("250 *")
        t.send_raw(b"STARTTLS\r\nRSET\r\nMAIL FROM:<alice@postroom.test>\r\n")
        t.expect("220 2.0.0 *")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tls = context.wrap_socket(t.sock, server_hostname="mx.postroom.test")
        tls.settimeout(10)
        tls.sendall(b"NOOP\r\n")
        reply = tls.recv(4096)
        assert reply.startswith(b"250 2.0.0"), reply  # the NOOP's reply, not the injected RSET's or MAIL's
        tls.sendall(b"MAIL FROM:<alice@postroom.test>\r\n")
        assert tls.recv(4096).startswith(b"503 5.5.1")  # EHLO again after TLS: state was reset
        tls.close()


def test_starttls_cannot_be_repeated_and_mx_port_offers_it(
    tls_server: ServerThread, client_context: ssl.SSLContext
) -> None:
    host, port = _address(tls_server, "smtp")
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo("mx.example")
        assert client.has_extn("starttls")
        client.starttls(context=client_context)
        client.ehlo("mx.example")
        assert not client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 503


@needs_swaks
@pytest.mark.parametrize(("listener", "flags"), [("submission", ["--tls"]), ("submissions", ["--tlsc"])])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_submits_with_tls_and_auth(
    tls_server: ServerThread, listener: str, flags: list[str], mechanism: str
) -> None:
    host, port = _address(tls_server, listener)
    args: list[Any] = [
        "swaks", "--server", f"{host}:{port}", *flags, "--auth", mechanism,
        "--auth-user", "alice@postroom.test", "--auth-password", PASSWORD,
        "--from", "alice@postroom.test", "--to", "bob@postroom.test", "--timeout", "15",
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert "250 2.0.0 Ok: queued as" in result.stdout


needs_curl = needs("curl")


@needs_curl
@pytest.mark.parametrize(("listener", "scheme"), [("submission", "smtp"), ("submissions", "smtps")])
def test_curl_submits_with_ssl_reqd(
    tls_server: ServerThread, ca: trustme.CA, tmp_path: Path, listener: str, scheme: str
) -> None:
    host, port = _address(tls_server, listener)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    message = tmp_path / "message.eml"
    message.write_bytes(
        b"From: alice@postroom.test\r\nTo: bob@postroom.test\r\nSubject: curl\r\n\r\nvia curl\r\n"
    )
    result = subprocess.run(
        ["curl", "--silent", "--show-error", "--url", f"{scheme}://{host}:{port}", "--ssl-reqd",
         "--cacert", str(ca_file), "--resolve", f"mx.postroom.test:{port}:{host}",
         "--mail-from", "alice@postroom.test", "--mail-rcpt", "bob@postroom.test",
         "--user", f"alice@postroom.test:{PASSWORD}", "--upload-file", str(message), "--max-time", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = wait_for(lambda: maildir_messages(_config(tls_server), "bob@postroom.test"), what="delivery")
    assert path.read_bytes().endswith(b"\nvia curl\n")


@needs("msmtp")
@pytest.mark.parametrize(("listener", "starttls"), [("submission", "on"), ("submissions", "off")])
def test_msmtp_submits(
    tls_server: ServerThread, ca: trustme.CA, tmp_path: Path, listener: str, starttls: str
) -> None:
    host, port = _address(tls_server, listener)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = tmp_path / "msmtprc"
    settings.write_text(
        f"account default\nhost {host}\nport {port}\ntls on\ntls_starttls {starttls}\n"
        f"tls_trust_file {ca_file}\ntls_host_override mx.postroom.test\nauth plain\n"
        f"user alice@postroom.test\npassword {PASSWORD}\nfrom alice@postroom.test\n"
    )
    settings.chmod(0o600)
    result = subprocess.run(
        ["msmtp", "-C", str(settings), "bob@postroom.test"],
        input=b"Subject: msmtp\r\n\r\nvia msmtp\r\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (path,) = wait_for(lambda: maildir_messages(_config(tls_server), "bob@postroom.test"), what="delivery")
    assert path.read_bytes().endswith(b"\nvia msmtp\n")


def test_wrong_passwords_slow_down_and_a_locked_address_is_refused(
    tls_server: ServerThread, client_context: ssl.SSLContext
) -> None:
    host, port = _address(tls_server, "submission")
    wrong = "PLAIN " + base64.b64encode(b"\0alice@postroom.test\0bad").decode()
    right = "PLAIN " + base64.b64encode(f"\0alice@postroom.test\0{PASSWORD}".encode()).decode()
    with smtplib.SMTP(host, port, timeout=60) as client:
        client.starttls(context=client_context)
        client.ehlo("guesser.example")
        timings = []
        for _ in range(5):  # three answered at once, then 1 s and 2 s of delay (progressive)
            started = time.monotonic()
            assert client.docmd("AUTH", wrong)[0] == 535
            timings.append(time.monotonic() - started)
        assert timings[4] >= 1.9  # the fifth failure waited its 2 s
    # The count is in the database: seed it to the lockout, as after ten failures (or before a restart).
    db = sqlite3.connect(tls_server.config.database_path)
    with db:
        db.execute("UPDATE auth_failures SET failures = 10 WHERE key = 'ip:127.0.0.1'")
    db.close()
    with smtplib.SMTP(host, port, timeout=60) as client:
        client.starttls(context=client_context)
        client.ehlo("guesser.example")
        assert client.docmd("AUTH", right) == (454, b"4.7.0 Too many failed logins, try again later")
    assert "auth.throttled" in tls_server.log_text
