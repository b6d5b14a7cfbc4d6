"""DKIM end to end on loopback: `postroom dkim keygen` prints a record, the test DNS zone publishes it, a user
submits through postroom A (127.0.0.2), and postroom B (127.0.0.3, the remote MX) receives a message whose
DKIM-Signature dkimpy verifies with the key it looks up in that zone. Bounces A sends out are signed too."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import dns.exception
import dns.resolver
import pytest

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from postroom.config import Config
from postroom.queue import Envelope, Queue, Recipient
from tests.helpers.dns import DnsServer
from tests.helpers.server import (
    ServerThread,
    maildir_messages,
    make_config,
    server_thread,
    wait_for,
    write_config,
)

SENDER = "alice@postroom.test"
PASSWORD = "pw for dkim"

# A second verifier, written independently of dkimpy: Perl's Mail::DKIM, its key lookups sent to our zone.
_MAIL_DKIM = r"""
use strict; use Mail::DKIM::Verifier; use Mail::DKIM::DNS; use Net::DNS::Resolver;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$ARGV[0]], port => $ARGV[1], recurse => 1));
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (my $line = <STDIN>) { $line =~ s/\015?\012/\015\012/; $dkim->PRINT($line); }
$dkim->CLOSE;
print $dkim->result_detail, "\n";
"""


def _has_mail_dkim() -> bool:
    try:
        probe = subprocess.run(
            ["perl", "-MMail::DKIM::Verifier", "-e1"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return probe.returncode == 0


needs_mail_dkim = pytest.mark.skipif(
    not _has_mail_dkim(),
    reason="Perl's Mail::DKIM is not installed (apt-get install libmail-dkim-perl)",
)


def mail_dkim_verdict(message: bytes, dns_server: DnsServer) -> str:
    """Mail::DKIM's result for ``message``: "pass", "fail", "none", ..."""
    result = subprocess.run(
        ["perl", "-e", _MAIL_DKIM, dns_server.host, str(dns_server.port)],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return result.stdout.decode().strip()  # "pass", "fail (body has been altered)", ...


@pytest.fixture
def remote(tmp_path: Path, dns_server: DnsServer) -> Iterator[ServerThread]:
    """B: mx.remote.test on 127.0.0.3, keeping mail for remote.test."""
    config = make_config(
        tmp_path / "b",
        hostname="mx.remote.test",
        smtp={"listen": "127.0.0.3:0"},
        local={"domains": ["remote.test"]},
        dns={"nameservers": [dns_server.address], "timeout": 2},
    )
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("bob@remote.test")
    finally:
        db.close()
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    with server_thread(config) as running:
        yield running


def _sender(tmp_path: Path, dns_server: DnsServer, port: int, **sections: Any) -> tuple[Config, Path]:
    """A: mx.postroom.test on 127.0.0.2, written as a file so that the CLI works on it too."""
    (tmp_path / "a").mkdir()
    config, path = write_config(
        tmp_path / "a",
        smtp={"listen": "127.0.0.2:0"},
        dns={"nameservers": [dns_server.address], "timeout": 2},
        delivery={"smtp_port": port, "connect_timeout": 5, "command_timeout": 10, "poll_interval": 0.2},
        queue={"retry_schedule": [0.5]},
        **sections,
    )
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox(SENDER, password_hash=hash_password(PASSWORD))
    finally:
        db.close()
    return config, path


def keygen_and_publish(config_file: Path, domain: str, dns_server: DnsServer, *args: str) -> str:
    """Run `postroom dkim keygen`, put the record it prints into the zone; the record's name."""
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "dkim", "keygen", domain, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    zone_line = next(line for line in result.stdout.splitlines() if " IN TXT ( " in line)
    name = zone_line.split()[0]
    dns_server.add(name, "TXT", re.findall(r'"([^"]*)"', zone_line))  # the character-strings as printed
    return name.rstrip(".")


def verify_with_zone(message: bytes, dns_server: DnsServer) -> bool:
    """dkimpy's verdict, its key lookups going to the loopback DNS server (TXT strings joined, RFC 6376)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return b""
        return b"".join(b"".join(record.strings) for record in answer)

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def _received(config: Config, address: str, what: str) -> bytes:
    return bytes(wait_for(lambda: maildir_messages(config, address), what=what)[0].read_bytes())


def _submit(server: ServerThread, message: bytes) -> None:
    assert server.app is not None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # TLS is tested in test_submission; the signature is under test here
    with smtplib.SMTP(*server.app.address("submission"), timeout=10) as client:
        client.starttls(context=context)
        client.login(SENDER, PASSWORD)
        client.sendmail(SENDER, ["bob@remote.test"], message)


def _message(subject: str, body: bytes) -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: Bob <bob@remote.test>\r\nSubject: {subject}\r\n\r\n".encode() + body
    )


@pytest.mark.parametrize(
    ("algorithm", "body"),
    [
        ("rsa", b"A short note,  with   odd spacing \t\r\n\r\n\r\n"),
        ("ed25519", b"A short note signed with ed25519.\r\n"),
        ("rsa", b"".join(b"line %05d of a message kept in a spool file  \r\n" % n for n in range(4000))),
    ],
    ids=["rsa-inline", "ed25519-inline", "rsa-spooled"],
)
def test_submitted_mail_arrives_with_a_signature_that_verifies_in_dns(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread, algorithm: str, body: bytes
) -> None:
    config, config_file = _sender(tmp_path, dns_server, remote.address[1])
    record = keygen_and_publish(config_file, "postroom.test", dns_server, "--algorithm", algorithm)
    assert record == "postroom._domainkey.postroom.test"
    with server_thread(config) as sender:
        _submit(sender, _message(f"signed with {algorithm}", body))
        received = _received(remote.config, "bob@remote.test", "the signed message at B")
        assert "delivery.dkim_signed" in sender.log_text
    parsed = email.message_from_bytes(received, policy=email.policy.default)
    signature = dkim.util.parse_tag_value(str(parsed["DKIM-Signature"]).encode())
    assert signature[b"d"] == b"postroom.test"
    assert signature[b"s"] == b"postroom"
    assert signature[b"a"] == (b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256")
    assert verify_with_zone(received, dns_server)
    assert not verify_with_zone(received.replace(b"signed with", b"forged with"), dns_server)


def test_without_a_published_record_the_signature_does_not_verify_and_without_a_key_none_is_added(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    config, _ = _sender(tmp_path, dns_server, remote.address[1])
    with server_thread(config) as sender:
        _submit(sender, _message("no key yet", b"unsigned\r\n"))
        unsigned = _received(remote.config, "bob@remote.test", "the unsigned message at B")
    assert b"DKIM-Signature" not in unsigned
    assert not verify_with_zone(unsigned, dns_server)


def _inject(server: ServerThread, sender: str, rcpt: str, body: bytes) -> str:
    async def commit(queue: Queue) -> str:
        writer = queue.open_spool()
        writer.write(body)
        recipient = Recipient(address=rcpt, mailbox=rcpt, transport="smtp")
        return await queue.commit(writer, Envelope(sender=sender, recipients=(recipient,)))

    assert server.app is not None
    return str(server.call(commit, server.app.queue))


def test_a_bounce_to_a_remote_sender_is_signed_for_our_hostname(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("nomail.test", "MX", "0 .")  # RFC 7505 null MX: a permanent failure, so a bounce
    config, config_file = _sender(tmp_path, dns_server, remote.address[1])
    keygen_and_publish(config_file, "mx.postroom.test", dns_server, "--bits", "1024")
    with server_thread(config) as sender:
        _inject(sender, "bob@remote.test", "nobody@nomail.test", b"From: bob@remote.test\r\n\r\nhi\r\n")
        bounce = _received(remote.config, "bob@remote.test", "the bounce at B")
    parsed = email.message_from_bytes(bounce, policy=email.policy.default)
    assert parsed["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.postroom.test"
    assert b"d=mx.postroom.test;" in bounce
    assert verify_with_zone(bounce, dns_server)


@needs_mail_dkim
def test_a_second_independent_verifier_agrees(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    """Mail::DKIM (Debian 12: 1.20230212) knows rsa-sha256 only; ed25519 is checked by dkimpy above."""
    config, config_file = _sender(tmp_path, dns_server, remote.address[1])
    keygen_and_publish(config_file, "postroom.test", dns_server)
    body = b"Checked by Perl's Mail::DKIM,   too.  \r\n\r\n"
    with server_thread(config) as sender:
        _submit(sender, _message("two verifiers", body))
        received = _received(remote.config, "bob@remote.test", "the signed message at B")
    assert mail_dkim_verdict(received, dns_server) == "pass"
    assert mail_dkim_verdict(received.replace(b"too", b"two"), dns_server).startswith("fail")
