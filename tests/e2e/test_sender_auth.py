"""Sender authentication end to end: a real server on the MX port, smtplib from 127.0.0.1, a loopback DNS
zone with SPF, DKIM and DMARC records, messages signed with keys made here; the verdict is read back from
the Authentication-Results header of the delivered Maildir file (or from the SMTP reply)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import authres
import pytest

from postroom.config import Config
from tests.e2e.conftest import add_accounts
from tests.helpers.dns import DnsServer
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for
from tests.policy.signing import DkimKey, make_key, message, publish, sign

RECIPIENT = "bob@postroom.test"


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_key()


@pytest.fixture
def zone(dns_server: DnsServer, key: DkimKey) -> DnsServer:
    """good.test: SPF lists 127.0.0.1, signs with "sel", p=reject. forged.test: p=reject, -all elsewhere.
    junk.test: p=quarantine. loose.test: p=none, SPF ~all."""
    publish(dns_server, key, domain="good.test")
    dns_server.add("good.test", "TXT", "v=spf1 ip4:127.0.0.0/8 -all")
    dns_server.add("_dmarc.good.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("forged.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add("_dmarc.forged.test", "TXT", "v=DMARC1; p=reject")
    dns_server.add("junk.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_server.add("_dmarc.junk.test", "TXT", "v=DMARC1; p=quarantine")
    dns_server.add("loose.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all")
    dns_server.add("_dmarc.loose.test", "TXT", "v=DMARC1; p=none")
    return dns_server


def mx_config(tmp_path: Path, dns: DnsServer, **sender_auth: Any) -> Config:
    config = make_config(
        tmp_path,
        dns={"nameservers": [dns.address], "timeout": 2},
        sender_auth={"enabled": True, "exempt_networks": [], **sender_auth},
    )
    add_accounts(config)
    return config


@pytest.fixture
def mx(tmp_path: Path, zone: DnsServer) -> Iterator[ServerThread]:
    with server_thread(mx_config(tmp_path, zone)) as running:
        yield running


def send(server: ServerThread, sender: str, data: bytes, *, ehlo: str = "client.example") -> None:
    with smtplib.SMTP(*server.address, local_hostname=ehlo, timeout=20) as client:
        client.sendmail(sender, [RECIPIENT], data)


def delivered(config: Config, folder: str = "") -> bytes:
    def found() -> list[Path]:
        if not folder:
            return maildir_messages(config, RECIPIENT)
        root = config.mailboxes_dir / "postroom.test" / "bob" / folder / "new"
        return sorted(root.iterdir()) if root.is_dir() else []

    (path,) = wait_for(found, what=f"a message in {folder or 'the inbox'}")
    return path.read_bytes()


def results(stored: bytes) -> dict[str, str]:
    """The A-R header of a delivered (LF) file, parsed by authres: "method[.identity]" -> result."""
    lines = stored.decode().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("Authentication-Results:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(("\t", " ")))
    parsed = authres.all_features().parse(" ".join(line.strip() for line in lines[start:end]))
    assert parsed.authserv_id == "mx.postroom.test"
    found = {}
    for result in parsed.results:
        identity = next((p.name for p in result.properties if p.type == "smtp"), "")
        found[f"{result.method}.{identity}".rstrip(".")] = result.result
    return found


def test_signed_aligned_mail_passes_spf_dkim_and_dmarc(mx: ServerThread, key: DkimKey) -> None:
    send(mx, "alice@good.test", sign(message(from_address="alice@good.test"), key, domain="good.test"))
    stored = delivered(mx.config)
    assert results(stored) == {"spf.mailfrom": "pass", "spf.helo": "none", "dkim": "pass", "dmarc": "pass"}
    assert stored.startswith(b"Return-Path: <alice@good.test>\nDelivered-To: bob@postroom.test\n")
    assert stored.index(b"Authentication-Results:") < stored.index(b"Received:")  # on top, above ours


def test_forged_sender_under_p_reject_gets_550_5_7_1(mx: ServerThread, key: DkimKey) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(mx, "ceo@forged.test", message(from_address="ceo@forged.test"))
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    assert b"DMARC" in refused.value.smtp_error
    # the server still serves the next message normally
    send(mx, "alice@good.test", sign(message(from_address="alice@good.test"), key, domain="good.test"))
    assert results(delivered(mx.config))["dmarc"] == "pass"


def test_tampered_body_fails_dkim_and_dmarc_rejects(mx: ServerThread, key: DkimKey) -> None:
    signed = sign(message(from_address="alice@good.test"), key, domain="good.test")
    # SPF passes for good.test from 127.0.0.1, so DMARC still passes on SPF alone: DKIM fail is only noted
    send(mx, "alice@good.test", signed.replace(b"Hi there.", b"Hi THERE."))
    assert results(delivered(mx.config)) == {
        "spf.mailfrom": "pass", "spf.helo": "none", "dkim": "fail", "dmarc": "pass",
    }  # fmt: skip


def test_p_none_failure_is_delivered_with_softfail_noted(mx: ServerThread) -> None:
    send(mx, "news@loose.test", message(from_address="news@loose.test"))
    assert results(delivered(mx.config)) == {
        "spf.mailfrom": "softfail", "spf.helo": "none", "dkim": "none", "dmarc": "fail",
    }  # fmt: skip


def test_p_quarantine_is_delivered_with_the_header_by_default(mx: ServerThread) -> None:
    send(mx, "x@junk.test", message(from_address="x@junk.test"))
    stored = delivered(mx.config)
    assert results(stored)["dmarc"] == "fail"
    assert b"policy.dmarc=quarantine" in stored


def test_p_quarantine_goes_to_junk_when_configured(tmp_path: Path, zone: DnsServer) -> None:
    config = mx_config(tmp_path, zone, quarantine="junk")
    with server_thread(config) as server:
        send(server, "x@junk.test", message(from_address="x@junk.test"))
        stored = delivered(config, ".Junk")
    assert results(stored)["dmarc"] == "fail"
    assert b"X-Postroom-Folder" not in stored
    assert (config.mailboxes_dir / "postroom.test" / "bob" / ".Junk" / "maildirfolder").exists()
    assert maildir_messages(config, RECIPIENT) == []


def test_spf_fail_rejected_only_when_configured(tmp_path: Path, zone: DnsServer) -> None:
    zone.add("strict.test", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    config = mx_config(tmp_path, zone, reject_spf_fail=True)
    with server_thread(config) as server, pytest.raises(smtplib.SMTPDataError) as refused:
        send(server, "a@strict.test", message(from_address="a@strict.test"))
    assert (refused.value.smtp_code, refused.value.smtp_error[:7]) == (550, b"5.7.23 ")


def test_large_spooled_message_gets_the_header_and_skips_dkim(
    tmp_path: Path, zone: DnsServer, key: DkimKey
) -> None:
    config = mx_config(tmp_path, zone, dkim_max_size=50_000)
    body = "".join(f"line {n} of a long message body\r\n" for n in range(5_000))  # ~150 KB: spilled
    data = sign(message(from_address="alice@good.test", body=body), key, domain="good.test")
    with server_thread(config) as server:
        send(server, "alice@good.test", data)
        stored = delivered(config)
    assert results(stored) == {"spf.mailfrom": "pass", "spf.helo": "none", "dkim": "none", "dmarc": "pass"}
    assert stored.endswith(b"line 4999 of a long message body\n")


def test_ehlo_as_our_hostname_is_noted_or_refused(tmp_path: Path, zone: DnsServer, mx: ServerThread) -> None:
    send(mx, "alice@good.test", message(from_address="alice@good.test"), ehlo="mx.postroom.test")
    assert b"policy.ehlo=ours" in delivered(mx.config)
    config = mx_config(tmp_path / "strict", zone, reject_ehlo_impersonation=True)
    with (
        server_thread(config) as server,
        smtplib.SMTP(*server.address, local_hostname="[192.0.2.7]") as client,
    ):
        client.ehlo()
        code, text = client.mail("alice@good.test")
        assert (code, text[:6]) == (550, b"5.7.1 ")
        assert client.noop()[0] == 250  # the session goes on


def test_this_hosts_own_programs_are_not_checked_by_default(tmp_path: Path, zone: DnsServer) -> None:
    config = make_config(
        tmp_path, dns={"nameservers": [zone.address], "timeout": 2}, sender_auth={"enabled": True}
    )
    add_accounts(config)
    with server_thread(config) as running:  # the client is 127.0.0.1: in the default exempt_networks
        send(running, "alice@strict.test", b"From: alice@strict.test\r\nSubject: cron\r\n\r\nreport\r\n")
        stored = delivered(config)
    assert b"Authentication-Results:" not in stored
    assert not [query for query in zone.queries if "strict.test" in query.name]
