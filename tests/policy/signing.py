"""Test helpers for sender authentication: real DKIM keys made in the test, their DNS records, signing."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom.config.schema import DnsSettings
from postroom.dns import DnsResolver
from tests.helpers.dns import DnsServer


@dataclass(frozen=True)
class DkimKey:
    """An RSA key: the PEM to sign with and the TXT record to publish at <selector>._domainkey.<domain>."""

    private_pem: bytes
    record: str


def make_key(bits: int = 1024) -> DkimKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey(private_pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}")


def publish(dns: DnsServer, key: DkimKey, *, domain: str, selector: str = "sel") -> None:
    dns.add(f"{selector}._domainkey.{domain}", "TXT", key.record)


def message(*, from_address: str, subject: str = "hello", body: str = "Hi there.\r\n") -> bytes:
    return (
        f"From: Sender <{from_address}>\r\nTo: bob@postroom.test\r\nSubject: {subject}\r\n"
        f"Date: Tue, 1 Oct 2024 10:00:00 +0000\r\nMessage-ID: <{subject}@test>\r\n\r\n{body}"
    ).encode()


def sign(data: bytes, key: DkimKey, *, domain: str, selector: str = "sel") -> bytes:
    signature = dkim.sign(
        data,
        selector.encode(),
        domain.encode(),
        key.private_pem,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return bytes(signature) + data


def resolver_for(dns: DnsServer) -> DnsResolver:
    return DnsResolver(settings=DnsSettings(nameservers=(dns.nameserver,), timeout=2.0))
