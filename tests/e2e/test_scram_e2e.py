"""AUTH SCRAM-SHA-256 (RFC 7677, RFC 4954) on the submission listeners of a real server, after STARTTLS: a
client written out here from RFC 5802 (smtplib has none) and msmtp (GNU SASL) log in and submit; wrong
passwords, old accounts, channel binding and garbage are refused with proper replies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from postroom.config import Config
from tests.helpers.peers import needs
from tests.helpers.server import ServerThread, maildir_messages, server_thread, wait_for, write_config

PASSWORD = "correct horse battery staple"
ALICE = "alice@postroom.test"


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class ScramClient:
    """The client side of SCRAM-SHA-256 (RFC 5802 3, RFC 7677), written out independently of the server's."""

    def __init__(self, username: str, password: str, *, gs2_header: str = "n,,") -> None:
        self.password = password
        self.gs2_header = gs2_header
        self.nonce = secrets.token_urlsafe(18)
        self.bare = f"n={username.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.server_signature = ""

    def first(self) -> str:
        return b64(self.gs2_header + self.bare)

    def final(self, challenge: bytes) -> str:
        server_first = base64.b64decode(challenge).decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        assert attrs["r"].startswith(self.nonce)
        assert len(attrs["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={b64(self.gs2_header)},r={attrs['r']}"
        auth_message = f"{self.bare},{server_first},{without_proof}".encode()
        client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = b64(hmac.new(server_key, auth_message, hashlib.sha256).digest())
        return b64(f"{without_proof},p={b64(proof)}")

    def check_server_final(self, challenge: bytes) -> None:
        assert base64.b64decode(challenge).decode() == f"v={self.server_signature}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def config_file(tmp_path: Path, ca: trustme.CA) -> tuple[Config, Path]:
    cert = ca.issue_cert("mx.postroom.test", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return write_config(
        tmp_path,
        tls={"cert_file": str(cert_file), "key_file": str(key_file)},
        # 4096 rounds (RFC 7677's floor) keep the tests quick; no waiting between failed logins
        auth={
            "scram_iterations": 4096,
            "throttle_free_failures": 2,
            "throttle_max_delay": 0,
            "throttle_lockout_failures": 4,
        },
    )


def postroom(config_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_path), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def server(config_file: tuple[Config, Path]) -> Iterator[ServerThread]:
    config, path = config_file
    added = postroom(path, "user", "add", ALICE, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert postroom(path, "user", "add", "bob@postroom.test").returncode == 0
    with server_thread(config) as running:
        yield running


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def connect(server: ServerThread, context: ssl.SSLContext) -> smtplib.SMTP:
    assert server.app is not None
    client = smtplib.SMTP(*server.app.address("submission"), timeout=10)
    client.ehlo("laptop.example")
    assert not client.has_extn("auth")  # never before TLS (RFC 4954 4)
    client.starttls(context=context)
    client.ehlo("laptop.example")
    return client


def scram_login(
    client: smtplib.SMTP, username: str, password: str, *, initial: bool = True
) -> tuple[int, bytes]:
    """AUTH SCRAM-SHA-256 to the end; the last reply."""
    scram = ScramClient(username, password)
    if initial:
        code, challenge = client.docmd("AUTH", f"SCRAM-SHA-256 {scram.first()}")
    else:
        code, empty = client.docmd("AUTH", "SCRAM-SHA-256")
        assert (code, empty) == (334, b"")
        code, challenge = client.docmd(scram.first())
    assert code == 334, challenge
    code, reply = client.docmd(scram.final(challenge))
    if code != 334:
        return code, reply
    scram.check_server_final(reply)  # the server proves it knows the password too
    return client.docmd("")


@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "no-initial-response"])
def test_scram_login_then_submit_as_self(
    server: ServerThread, client_context: ssl.SSLContext, initial: bool
) -> None:
    with connect(server, client_context) as client:
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
        assert "SCRAM-SHA-256-PLUS" not in client.esmtp_features["auth"]
        assert scram_login(client, "Alice@postroom.test", PASSWORD, initial=initial) == (
            235,
            b"2.7.0 Authentication successful",
        )
        client.sendmail(ALICE, ["bob@postroom.test"], b"Subject: scram\r\n\r\nvia SCRAM\r\n")
    (path,) = wait_for(lambda: maildir_messages(server.config, "bob@postroom.test"), what="delivery")
    stored = path.read_bytes()
    assert stored.endswith(b"\nvia SCRAM\n")
    assert b"with ESMTPSA id" in stored
    assert "auth.ok" in server.log_text
    assert PASSWORD not in server.log_text


def test_wrong_password_is_535_counted_and_then_locked(
    server: ServerThread, client_context: ssl.SSLContext
) -> None:
    with connect(server, client_context) as client:
        for _ in range(4):
            refused = scram_login(client, ALICE, "wrong password")
            assert refused == (535, b"5.7.8 Authentication credentials invalid")
        # locked (per account and per address): the right password is refused without its proof being told
        assert scram_login(client, ALICE, PASSWORD) == (454, b"4.7.0 Too many failed logins, try again later")
    assert server.log_text.count("auth.failed") == 4
    assert "client=127.0.0.1" in server.log_text
    assert "wrong password" not in server.log_text


def test_unknown_user_is_535(server: ServerThread, client_context: ssl.SSLContext) -> None:
    with connect(server, client_context) as client:
        assert scram_login(client, "nobody@postroom.test", PASSWORD)[0] == 535


def test_account_without_scram_secrets_needs_its_password_set_again(
    server: ServerThread, client_context: ssl.SSLContext, config_file: tuple[Config, Path]
) -> None:
    config, path = config_file
    accounts, db = open_accounts(config)
    try:  # as a mailbox made before SCRAM secrets were kept: an argon2id hash only
        accounts.add_mailbox("carol@postroom.test", password_hash=hash_password(PASSWORD))
    finally:
        db.close()
    with connect(server, client_context) as client:
        assert scram_login(client, "carol@postroom.test", PASSWORD)[0] == 535
        client.login("carol@postroom.test", PASSWORD)  # PLAIN still works
    changed = postroom(path, "user", "passwd", "carol@postroom.test", "--password-stdin", stdin="new one\n")
    assert changed.returncode == 0, changed.stderr

    def logs_in() -> bool:  # account lookups are cached for a second
        with connect(server, client_context) as client:
            return scram_login(client, "carol@postroom.test", "new one")[0] == 235

    assert wait_for(logs_in, timeout=10, interval=0.5, what="SCRAM login after passwd")
    with connect(server, client_context) as client:  # the old password's secrets are gone with it
        assert scram_login(client, "carol@postroom.test", PASSWORD)[0] == 535


def test_channel_binding_demand_and_garbage_are_refused(
    server: ServerThread, client_context: ssl.SSLContext
) -> None:
    with connect(server, client_context) as client:
        binding = ScramClient(ALICE, PASSWORD, gs2_header="p=tls-server-end-point,,")
        code, text = client.docmd("AUTH", f"SCRAM-SHA-256 {binding.first()}")
        assert (code, text[:6]) == (501, b"5.5.4 ")
        assert b"Channel binding" in text
        assert client.docmd("AUTH", "SCRAM-SHA-256 " + b64("n,,n=alice"))[0:1] == (501,)
        assert client.docmd("AUTH", "SCRAM-SHA-256")[0] == 334
        assert client.docmd("bm90IHNjcmFt!") == (501, b"5.5.2 Cannot decode the authentication response")
        scram = ScramClient(ALICE, PASSWORD)
        assert client.docmd("AUTH", f"SCRAM-SHA-256 {scram.first()}")[0] == 334
        assert client.docmd("*") == (501, b"5.7.0 Authentication cancelled")  # RFC 4954 4
        assert scram_login(client, ALICE, PASSWORD)[0] == 235  # still possible after all that


@needs("msmtp")
def test_msmtp_logs_in_with_scram(server: ServerThread, ca: trustme.CA, tmp_path: Path) -> None:
    version = subprocess.run(["msmtp", "--version"], capture_output=True, text=True, timeout=30, check=False)
    if "scram-sha-256" not in version.stdout:
        pytest.skip("this msmtp has no SCRAM-SHA-256 (it needs GNU SASL)")
    assert server.app is not None
    host, port = server.app.address("submission")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = tmp_path / "msmtprc"
    settings.write_text(
        f"account default\nhost {host}\nport {port}\ntls on\ntls_starttls on\n"
        f"tls_trust_file {ca_file}\ntls_host_override mx.postroom.test\nauth scram-sha-256\n"
        f"user {ALICE}\npassword {PASSWORD}\nfrom {ALICE}\n"
    )
    settings.chmod(0o600)
    result = subprocess.run(
        ["msmtp", "--debug", "-C", str(settings), "bob@postroom.test"],
        input=b"Subject: msmtp\r\n\r\nvia msmtp and SCRAM\r\n", capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"--> AUTH SCRAM-SHA-256" in result.stdout  # the transcript msmtp prints with --debug
    assert b"<-- 235 2.7.0" in result.stdout
    assert PASSWORD.encode() not in result.stdout
    (path,) = wait_for(lambda: maildir_messages(server.config, "bob@postroom.test"), what="delivery")
    assert path.read_bytes().endswith(b"\nvia msmtp and SCRAM\n")
    assert "auth.ok" in server.log_text
