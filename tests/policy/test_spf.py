"""SPF (RFC 7208) over the loopback DNS server: every result, the mechanisms, macros and the limits."""

from __future__ import annotations

import pytest

from postroom.dns import DnsResolver
from postroom.policy.spf import check_helo, check_host, check_mail_from
from tests.helpers.dns import DnsServer
from tests.policy.signing import resolver_for


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return resolver_for(dns_server)


async def result(resolver: DnsResolver, domain: str, ip: str = "192.0.2.10") -> str:
    verdict = await check_host(resolver, ip=ip, domain=domain, sender=f"user@{domain}", helo="client.test")
    return verdict.result


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "pass"),
        ("v=spf1 ip4:198.51.100.1 -all", "fail"),
        ("v=spf1 ip4:198.51.100.1 ~all", "softfail"),
        ("v=spf1 ip4:198.51.100.1 ?all", "neutral"),
        ("v=spf1 ip4:198.51.100.1", "neutral"),
        ("v=spf1 -ip4:192.0.2.10 +all", "fail"),
        ("v=spf1 ip6:2001:db8::/32 -all", "fail"),
        ("v=spf1 ip4:192.0.2.0/33 -all", "permerror"),
        ("v=spf1 frobnicate:x -all", "permerror"),
        ("v=spf1 ip4:192.0.2.0/24 redirect=a.test redirect=b.test", "permerror"),
        ("V=SPF1 IP4:192.0.2.10 -ALL", "pass"),
        ("v=spf10 ip4:192.0.2.10", "none"),
    ],
)
async def test_each_result_of_a_single_record(
    dns_server: DnsServer, resolver: DnsResolver, record: str, expected: str
) -> None:
    dns_server.add("example.test", "TXT", record)
    assert await result(resolver, "example.test") == expected


async def test_no_record_is_none(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "google-site-verification=abc")
    assert await result(resolver, "example.test") == "none"
    assert await result(resolver, "nowhere.test") == "none"


async def test_two_records_are_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 -all").add("example.test", "TXT", "v=spf1 +all")
    assert await result(resolver, "example.test") == "permerror"


async def test_servfail_is_temperror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.fail("example.test")
    verdict = await check_host(
        resolver, ip="192.0.2.10", domain="example.test", sender="a@example.test", helo="c.test"
    )
    assert verdict.result == "temperror"
    assert "example.test" in verdict.reason


async def test_a_and_mx_with_cidr(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 a mx:mail.test/24 -all")
    dns_server.add("example.test", "A", "203.0.113.5")
    dns_server.add("mail.test", "MX", "10 mx.mail.test.").add("mx.mail.test", "A", "198.51.100.7")
    assert await result(resolver, "example.test", "203.0.113.5") == "pass"
    assert await result(resolver, "example.test", "198.51.100.200") == "pass"  # inside the /24
    assert await result(resolver, "example.test", "203.0.113.6") == "fail"


async def test_a_matches_ipv6_clients_against_aaaa(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 a//64 -all")
    dns_server.add("example.test", "AAAA", "2001:db8:1:2::1")
    assert await result(resolver, "example.test", "2001:db8:1:2::99") == "pass"
    assert await result(resolver, "example.test", "2001:db8:1:3::1") == "fail"


async def test_include_pass_matches_and_fail_does_not(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 include:good.test include:bad.test ~all")
    dns_server.add("good.test", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    dns_server.add("bad.test", "TXT", "v=spf1 -all")
    assert await result(resolver, "example.test", "192.0.2.10") == "pass"
    assert await result(resolver, "example.test", "192.0.2.11") == "softfail"


async def test_include_of_a_domain_without_record_is_permerror(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 include:missing.test -all")
    assert await result(resolver, "example.test") == "permerror"


async def test_include_loop_is_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("a.test", "TXT", "v=spf1 include:b.test -all")
    dns_server.add("b.test", "TXT", "v=spf1 include:a.test -all")
    assert await result(resolver, "a.test") == "permerror"


async def test_redirect_is_followed_when_nothing_matched(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 ip4:198.51.100.1 redirect=_spf.example.test")
    dns_server.add("_spf.example.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    assert await result(resolver, "example.test", "192.0.2.10") == "pass"
    assert await result(resolver, "example.test", "203.0.113.1") == "fail"


async def test_more_than_ten_dns_terms_is_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    includes = " ".join(f"include:i{n}.test" for n in range(11))
    dns_server.add("example.test", "TXT", f"v=spf1 {includes} -all")
    for n in range(11):
        dns_server.add(f"i{n}.test", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    verdict = await check_host(
        resolver, ip="192.0.2.10", domain="example.test", sender="a@example.test", helo="c.test"
    )
    assert verdict.result == "permerror"
    assert "10 DNS" in verdict.reason


async def test_more_than_two_void_lookups_is_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 a:v1.test a:v2.test a:v3.test -all")
    assert await result(resolver, "example.test") == "permerror"


async def test_exists_with_macros(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 exists:%{ir}.%{l1r-}._spf.%{d} -all")
    # 192.0.2.10 reversed; local part "user" -> last label of "user" split on "-" -> "user"
    dns_server.add("10.2.0.192.user._spf.example.test", "A", "127.0.0.2")
    assert await result(resolver, "example.test", "192.0.2.10") == "pass"
    assert await result(resolver, "example.test", "192.0.2.11") == "fail"


async def test_ptr_mechanism(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 ptr -all")
    dns_server.add("192.0.2.10", "PTR", "mail.example.test").add("mail.example.test", "A", "192.0.2.10")
    assert await result(resolver, "example.test", "192.0.2.10") == "pass"


async def test_bad_macro_is_permerror(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 exists:%{x}.test -all")
    assert await result(resolver, "example.test") == "permerror"


async def test_mail_from_of_the_null_sender_checks_the_helo(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("client.test", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    verdict = await check_mail_from(resolver, ip="192.0.2.10", sender="", helo="client.test")
    assert (verdict.result, verdict.identity, verdict.domain) == ("pass", "mailfrom", "client.test")


async def test_helo_identity_and_address_literal(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("client.test", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    assert (await check_helo(resolver, ip="192.0.2.99", helo="client.test")).result == "fail"
    literal = await check_helo(resolver, ip="192.0.2.99", helo="[192.0.2.99]")
    assert (literal.result, literal.identity) == ("none", "helo")


async def test_single_label_domain_is_none_without_lookup(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    assert await result(resolver, "localhost") == "none"
    assert dns_server.queries == ()


async def test_ipv4_mapped_client_is_checked_as_ipv4(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    assert await result(resolver, "example.test", "::ffff:192.0.2.10") == "pass"
