"""MTA-STS end to end: postroom A delivers to postroom B (mx.remote.test, 127.0.0.3) as remote.test's policy
says, found through the loopback DNS server and fetched from a loopback HTTPS policy host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.config import Config
from tests.e2e.test_relay import _message, _one_message, _remote_config, _sender_config, inject
from tests.helpers.dns import DnsServer
from tests.helpers.https import PolicyServer
from tests.helpers.server import ServerThread, server_thread, wait_for

ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.remote.test\nmax_age: 86400\n"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def policy(ca: trustme.CA, dns_server: DnsServer) -> Iterator[PolicyServer]:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    dns_server.add("_mta-sts.remote.test", "TXT", "v=STSv1; id=2026112801")
    dns_server.add("mta-sts.remote.test", "A", "127.0.0.1")
    with PolicyServer.running(ca, "mta-sts.remote.test", ENFORCE) as server:
        yield server


def _pem_files(tmp_path: Path, ca: trustme.CA, hostname: str) -> dict[str, str]:
    cert = ca.issue_cert(hostname)
    cert_file, key_file = tmp_path / f"{hostname}.pem", tmp_path / f"{hostname}.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return {"cert_file": str(cert_file), "key_file": str(key_file)}


def _sender(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA, remote: ServerThread, policy: PolicyServer
) -> Config:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    delivery: dict[str, Any] = {"tls_ca_file": str(ca_file), "mta_sts_port": policy.port}
    return _sender_config(tmp_path, dns_server, remote.address[1], delivery=delivery)


def test_an_enforce_policy_delivers_over_verified_tls_to_a_listed_mx(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA, policy: PolicyServer
) -> None:
    b_config = _remote_config(tmp_path, tls=_pem_files(tmp_path, ca, "mx.remote.test"))
    with (
        server_thread(b_config) as remote,
        server_thread(_sender(tmp_path, dns_server, ca, remote, policy)) as a,
    ):
        inject(a, "bob@remote.test", body=_message("under policy"))
        message = _one_message(b_config, "bob@remote.test", what="delivery under the policy")
        log = a.log_text
    assert policy.requests == ["mta-sts.remote.test/.well-known/mta-sts.txt"]
    assert "mta_sts.policy" in log
    assert "tls=True" in log
    assert "with ESMTPS" in message.as_string()


def test_an_enforce_policy_refuses_an_mx_it_does_not_name(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA, policy: PolicyServer
) -> None:
    policy.body = ENFORCE.replace("mx: mx.remote.test", "mx: *.elsewhere.test")
    b_config = _remote_config(tmp_path, tls=_pem_files(tmp_path, ca, "mx.remote.test"))
    with (
        server_thread(b_config) as remote,
        server_thread(_sender(tmp_path, dns_server, ca, remote, policy)) as a,
    ):
        queue_id = inject(a, "bob@remote.test", body=_message("not to that host"))
        wait_for(lambda: "delivery.mta_sts_mismatch" in a.log_text, what="the policy mismatch")
        wait_for(lambda: "deferred" in a.log_text, what="the deferral")
        assert a.app is not None
        assert a.app.queue.message_count() == 1
        log = a.log_text
    assert queue_id in log
    assert "not named by the domain's MTA-STS policy" in log


def test_an_enforce_policy_refuses_an_mx_whose_certificate_does_not_verify(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA, policy: PolicyServer
) -> None:
    b_config = _remote_config(tmp_path)  # B offers STARTTLS with its own self-signed certificate
    with (
        server_thread(b_config) as remote,
        server_thread(_sender(tmp_path, dns_server, ca, remote, policy)) as a,
    ):
        inject(a, "bob@remote.test", body=_message("not without verified TLS"))
        wait_for(lambda: "delivery.host_failed" in a.log_text, what="the refused host")
        assert a.app is not None
        assert a.app.queue.message_count() == 1
        log = a.log_text
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert "delivery.deferred" in log  # a certificate may be fixed: temporary, retried


def test_a_testing_policy_only_logs_a_mismatch(
    tmp_path: Path, dns_server: DnsServer, ca: trustme.CA, policy: PolicyServer
) -> None:
    policy.body = "version: STSv1\nmode: testing\nmx: *.elsewhere.test\nmax_age: 86400\n"
    b_config = _remote_config(tmp_path)
    with (
        server_thread(b_config) as remote,
        server_thread(_sender(tmp_path, dns_server, ca, remote, policy)) as a,
    ):
        inject(a, "bob@remote.test", body=_message("testing only"))
        _one_message(b_config, "bob@remote.test", what="delivery despite the testing policy")
        log = a.log_text
    assert "delivery.mta_sts_mismatch" in log
