"""DMARC (RFC 7489): records, alignment (relaxed and strict), organizational domains, policies, pct."""

from __future__ import annotations

import pytest

from postroom.dns import DnsResolver
from postroom.policy.dkim import DkimVerdict
from postroom.policy.dmarc import DmarcVerdict, OrganizationalDomains, evaluate, from_domain, parse_record
from postroom.policy.spf import SpfVerdict
from tests.helpers.dns import DnsServer
from tests.policy.signing import message, resolver_for

NO_DKIM = (DkimVerdict("none"),)
SPF_NONE = SpfVerdict("none", "mailfrom", "")


@pytest.fixture(scope="module")
def organizations() -> OrganizationalDomains:
    return OrganizationalDomains()


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return resolver_for(dns_server)


async def dmarc(
    resolver: DnsResolver,
    organizations: OrganizationalDomains,
    *,
    from_address: str = "a@example.test",
    spf: SpfVerdict = SPF_NONE,
    dkim: tuple[DkimVerdict, ...] = NO_DKIM,
    chance: float = 0.0,
) -> DmarcVerdict:
    return await evaluate(
        message(from_address=from_address),
        resolver=resolver,
        organizations=organizations,
        spf=spf,
        dkim=dkim,
        chance=lambda: chance,
    )


def test_organizational_domain_uses_the_public_suffix_list(organizations: OrganizationalDomains) -> None:
    assert organizations.of("mail.example.co.uk") == "example.co.uk"
    assert organizations.of("a.b.example.com.") == "example.com"


def test_from_domain_needs_exactly_one_address() -> None:
    assert from_domain(b"From: A <a@Example.TEST>\r\n\r\nbody") == "example.test"
    assert from_domain(b"From:\r\n a@folded.test\r\n\r\n") == "folded.test"
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\n") is None
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n") is None
    assert from_domain(b"Subject: none\r\n\r\n") is None


def test_parse_record() -> None:
    record = parse_record("v=DMARC1; p=Quarantine; sp=reject; adkim=s; pct=50")
    assert record is not None
    assert (record.policy, record.subdomain_policy, record.percent) == ("quarantine", "reject", 50)
    assert (record.strict_dkim, record.strict_spf) == (True, False)
    assert parse_record("v=DMARC1; p=bogus") is None
    assert parse_record("p=reject; v=DMARC1") is None


async def test_dkim_aligned_passes(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    verdict = await dmarc(resolver, organizations, dkim=(DkimVerdict("pass", domain="mail.example.test"),))
    assert (verdict.result, verdict.policy, verdict.from_domain) == ("pass", "reject", "example.test")


async def test_strict_dkim_alignment_needs_the_exact_domain(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; adkim=s")
    verdict = await dmarc(resolver, organizations, dkim=(DkimVerdict("pass", domain="mail.example.test"),))
    assert (verdict.result, verdict.policy) == ("fail", "reject")


async def test_spf_aligned_relaxed_and_strict(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=quarantine")
    spf = SpfVerdict("pass", "mailfrom", "bounces.example.test")
    assert (await dmarc(resolver, organizations, spf=spf)).result == "pass"
    dns_server.remove("_dmarc.example.test").add(
        "_dmarc.example.test", "TXT", "v=DMARC1; p=quarantine; aspf=s"
    )
    assert (await dmarc(resolver, organizations, spf=spf)).result == "fail"


async def test_unaligned_passes_still_fail(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=none")
    verdict = await dmarc(
        resolver,
        organizations,
        spf=SpfVerdict("pass", "mailfrom", "other.test"),
        dkim=(DkimVerdict("pass", domain="other.test"), DkimVerdict("fail", domain="example.test")),
    )
    assert (verdict.result, verdict.policy) == ("fail", "none")


async def test_subdomain_uses_the_organizational_record_and_sp(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=none; sp=reject")
    verdict = await dmarc(resolver, organizations, from_address="a@news.example.test")
    assert (verdict.result, verdict.policy, verdict.from_domain) == ("fail", "reject", "news.example.test")


async def test_no_record_is_none_and_servfail_is_temperror(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    assert (await dmarc(resolver, organizations)).result == "none"
    dns_server.fail("_dmarc.example.test")
    assert (await dmarc(resolver, organizations)).result == "temperror"


async def test_pct_outside_the_sample_softens_the_policy(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject; pct=10")
    assert (await dmarc(resolver, organizations, chance=0.05)).policy == "reject"
    assert (await dmarc(resolver, organizations, chance=0.5)).policy == "quarantine"
