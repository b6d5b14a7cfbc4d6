"""`postroom check` against a loopback DNS server and trustme certificates: OK when every record is right,
FAIL with the exact record to publish when one is missing, WARN for a certificate about to expire."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.cli.check import check_certificate
from postroom.cli.main import main
from postroom.delivery.dkim_keys import DkimKeys
from tests.helpers.dns import DnsServer
from tests.helpers.server import write_config

HOST = "mx.postroom.test"
DOMAIN = "postroom.test"
IP = "192.0.2.10"


def setup(tmp_path: Path, dns_server: DnsServer, *, not_after: datetime.datetime | None = None) -> Path:
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST, not_after=not_after)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    config, path = write_config(
        tmp_path,
        local={"domains": [DOMAIN]},
        dns={"nameservers": [dns_server.address]},
        tls={"cert_file": str(cert), "key_file": str(key)},
    )
    DkimKeys(config.dkim_dir).generate(DOMAIN)
    return path


def publish_everything(dns_server: DnsServer, path: Path) -> None:
    config_dir = path.parent / "data"
    name, value = DkimKeys(config_dir / "dkim").txt_record(DOMAIN)
    dns_server.add(DOMAIN, "MX", f"10 {HOST}.")
    dns_server.add(DOMAIN, "TXT", "v=spf1 mx -all")
    dns_server.add(name, "TXT", value)
    dns_server.add(f"_dmarc.{DOMAIN}", "TXT", "v=DMARC1; p=reject")
    dns_server.add(HOST, "A", IP)
    dns_server.add(IP, "PTR", HOST)


def check(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = main(["-c", str(path), "check", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def by_check(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {finding["check"]: finding for finding in report["findings"]}


def test_everything_published_is_ok(
    tmp_path: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup(tmp_path, dns_server)
    publish_everything(dns_server, path)
    status, report = check(path, capsys)
    assert status == 0, report
    assert report["ok"] is True
    findings = by_check(report)
    names = ("mx", "spf", "dkim", "dmarc", "ptr", "tls", "data")
    assert {name: findings[name]["status"] for name in names} == dict.fromkeys(names, "OK")
    assert findings["address"]["message"] == f"{HOST} has address {IP}"


def test_missing_records_fail_with_the_record_to_publish(
    tmp_path: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup(tmp_path, dns_server)
    status, report = check(path, capsys, "--ip", IP)
    assert status == 1
    findings = by_check(report)
    assert findings["mx"]["status"] == "FAIL"
    assert findings["mx"]["record"] == f"{DOMAIN}. IN MX 10 {HOST}."
    assert findings["spf"]["record"] == f'{DOMAIN}. IN TXT "v=spf1 mx -all"'
    assert findings["dkim"]["record"].startswith(f'postroom._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=')
    assert findings["dmarc"]["record"].startswith(f'_dmarc.{DOMAIN}. IN TXT "v=DMARC1;')
    assert findings["ptr"]["record"].startswith(f"10.2.0.192.in-addr.arpa. IN PTR {HOST}.")


def test_wrong_records_fail_and_the_text_output_says_what_to_publish(
    tmp_path: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup(tmp_path, dns_server)
    publish_everything(dns_server, path)
    dns_server.remove(DOMAIN, "TXT").add(DOMAIN, "TXT", "v=spf1 ip4:198.51.100.0/24 -all")
    selector = f"postroom._domainkey.{DOMAIN}"
    dns_server.remove(selector).add(selector, "TXT", "v=DKIM1; k=rsa; p=MIIBIjANBgkqnot")
    status = main(["-c", str(path), "check"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  spf      postroom.test: SPF does not let mx.postroom.test (192.0.2.10) send" in out
    assert f'publish: {DOMAIN}. IN TXT "v=spf1 mx ip4:198.51.100.0/24 -all"' in out
    assert "FAIL  dkim     postroom._domainkey.postroom.test: the published key is not ours" in out
    assert "OK    mx       postroom.test: MX points to mx.postroom.test" in out


def test_spf_include_and_ip4_are_followed(
    tmp_path: Path, dns_server: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = setup(tmp_path, dns_server)
    publish_everything(dns_server, path)
    dns_server.remove(DOMAIN, "TXT").add(DOMAIN, "TXT", "v=spf1 include:_spf.provider.test -all")
    dns_server.add("_spf.provider.test", "TXT", "v=spf1 ip4:192.0.2.0/24 ~all")
    status, report = check(path, capsys)
    assert (status, by_check(report)["spf"]["status"]) == (0, "OK")


def test_certificate_expiring_soon_warns_and_a_wrong_name_fails(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    path = setup(tmp_path, dns_server, not_after=soon)
    from postroom.config import load_config

    config = load_config(path)
    now = datetime.datetime.now(datetime.UTC)
    finding = check_certificate(config, now=now)
    assert (finding.status, finding.message[:8]) == ("WARN", "expires ")
    assert check_certificate(config, now=now + datetime.timedelta(days=11)).status == "FAIL"
    other = type(config)(hostname="mail.elsewhere.test", tls=config.tls)
    assert "not mail.elsewhere.test" in check_certificate(other, now=now).message
