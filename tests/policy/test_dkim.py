"""DKIM verification (RFC 6376) of messages signed in the test with real keys, keys served by loopback DNS."""

from __future__ import annotations

import pytest

from postroom.dns import DnsResolver
from postroom.policy.dkim import verify_signatures
from tests.helpers.dns import DnsServer
from tests.policy.signing import make_key, message, publish, resolver_for, sign


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return resolver_for(dns_server)


async def test_good_signature_passes(dns_server: DnsServer, resolver: DnsResolver) -> None:
    key = make_key()
    publish(dns_server, key, domain="example.test")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (verdict,) = await verify_signatures(signed, resolver=resolver)
    assert (verdict.result, verdict.domain, verdict.selector) == ("pass", "example.test", "sel")
    assert verdict.identity == "@example.test"
    assert len(verdict.signature) == 12


async def test_changed_body_fails(dns_server: DnsServer, resolver: DnsResolver) -> None:
    key = make_key()
    publish(dns_server, key, domain="example.test")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (verdict,) = await verify_signatures(signed.replace(b"Hi there.", b"Hi THERE."), resolver=resolver)
    assert verdict.result == "fail"
    assert "body hash" in verdict.reason


async def test_changed_signed_header_fails(dns_server: DnsServer, resolver: DnsResolver) -> None:
    key = make_key()
    publish(dns_server, key, domain="example.test")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (verdict,) = await verify_signatures(
        signed.replace(b"Subject: hello", b"Subject: HELLO"), resolver=resolver
    )
    assert verdict.result == "fail"


async def test_unsigned_message_is_none(resolver: DnsResolver) -> None:
    (verdict,) = await verify_signatures(message(from_address="a@example.test"), resolver=resolver)
    assert verdict.result == "none"


async def test_missing_key_is_permerror_and_servfail_is_temperror(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    key = make_key()
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (missing,) = await verify_signatures(signed, resolver=resolver)
    assert missing.result == "permerror"
    dns_server.fail("sel._domainkey.example.test")
    (broken,) = await verify_signatures(signed, resolver=resolver)
    assert broken.result == "temperror"


async def test_revoked_key_is_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    key = make_key()
    dns_server.add("sel._domainkey.example.test", "TXT", "v=DKIM1; k=rsa; p=")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (verdict,) = await verify_signatures(signed, resolver=resolver)
    assert verdict.result == "permerror"


async def test_key_shorter_than_the_minimum_is_not_a_pass(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    key = make_key(1024)
    publish(dns_server, key, domain="example.test")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    (verdict,) = await verify_signatures(signed, resolver=resolver, min_key_bits=2048)
    assert verdict.result == "permerror"


async def test_every_signature_gets_its_verdict(dns_server: DnsServer, resolver: DnsResolver) -> None:
    author, relay = make_key(), make_key()
    publish(dns_server, author, domain="example.test")
    publish(dns_server, relay, domain="list.test", selector="s2")
    signed = sign(message(from_address="a@example.test"), author, domain="example.test")
    twice = sign(signed, relay, domain="list.test", selector="s2")
    verdicts = await verify_signatures(twice, resolver=resolver)
    assert [(v.result, v.domain) for v in verdicts] == [("pass", "list.test"), ("pass", "example.test")]


async def test_malformed_signature_is_permerror(resolver: DnsResolver) -> None:
    bad = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.test\r\n" + message(from_address="a@example.test")
    (verdict,) = await verify_signatures(bad, resolver=resolver)
    assert verdict.result == "permerror"
