"""DnsResolver against the loopback DNS server: answers as plain values, failures as the DnsError tree."""

from __future__ import annotations

import time

import pytest

from postroom.config.schema import DnsSettings
from postroom.dns import (
    DnsResolver,
    MxRecord,
    NoRecords,
    TemporaryDnsError,
    TlsaRecord,
    ascii_name,
)
from tests.helpers.dns import DnsServer, Query


def resolver_for(*servers: DnsServer, timeout: float = 2.0) -> DnsResolver:
    return DnsResolver(
        settings=DnsSettings(nameservers=tuple(s.nameserver for s in servers), timeout=timeout)
    )


async def test_mx_records_come_back_as_values_in_lower_case_without_final_dot(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("example.test", "MX", "10 MX1.Example.Test.").add(
        "example.test", "MX", "20 mx2.example.test"
    )

    records = await resolver.mx("example.test")

    assert sorted(records, key=lambda r: r.preference) == [
        MxRecord(10, "mx1.example.test"),
        MxRecord(20, "mx2.example.test"),
    ]


async def test_null_mx_exchange_is_the_root(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("nomail.test", "MX", "0 .")

    assert await resolver.mx("nomail.test") == [MxRecord(0, ".")]


async def test_addresses_are_ipv4_then_ipv6(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("mx.test", "AAAA", "2001:db8::1").add("mx.test", "A", "192.0.2.1")
    dns_server.add("mx.test", "A", "192.0.2.2")

    assert await resolver.addresses("mx.test") == ["192.0.2.1", "192.0.2.2", "2001:db8::1"]


async def test_addresses_with_ipv6_only(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("v6.test", "AAAA", "2001:DB8:0:0::25")

    assert await resolver.addresses("v6.test") == ["2001:db8::25"]


async def test_addresses_of_a_name_without_any_is_nodata(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("example.test", "MX", "10 mx.example.test")

    with pytest.raises(NoRecords) as caught:
        await resolver.addresses("example.test")
    assert not caught.value.nxdomain
    assert not caught.value.temporary


async def test_addresses_follow_a_cname(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("alias.test", "CNAME", "real.test").add("real.test", "A", "192.0.2.7")

    assert await resolver.addresses("alias.test") == ["192.0.2.7"]


async def test_txt_strings_of_one_record_are_joined(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", ["v=spf1 ", "-all"]).add("example.test", "TXT", "other")

    assert sorted(await resolver.txt("example.test")) == ["other", "v=spf1 -all"]


async def test_long_txt_is_split_and_comes_back_whole_over_tcp(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 700  # an RSA key is longer than one character-string and one datagram
    dns_server.add("sel._domainkey.example.test", "TXT", key)

    assert await resolver.txt("sel._domainkey.example.test") == [key]
    assert [q.transport for q in dns_server.queries] == ["udp", "tcp"]


async def test_ptr_for_ipv4_and_ipv6(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("192.0.2.1", "PTR", "MX.Example.Test.").add("2001:db8::1", "PTR", "mx6.example.test")

    assert await resolver.ptr("192.0.2.1") == ["mx.example.test"]
    assert await resolver.ptr("2001:db8::1") == ["mx6.example.test"]
    assert dns_server.queries[0] == Query("1.2.0.192.in-addr.arpa", "PTR", "udp")


async def test_ptr_of_something_not_an_ip_is_a_caller_error(resolver: DnsResolver) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        await resolver.ptr("mx.example.test")


async def test_tlsa(dns_server: DnsServer, resolver: DnsResolver) -> None:
    digest = bytes(range(32))  # matching type 1: a SHA-256 digest
    dns_server.add("_25._tcp.mx.example.test", "TLSA", f"3 1 1 {digest.hex()}")

    assert await resolver.tlsa("_25._tcp.mx.example.test") == [TlsaRecord(3, 1, 1, digest)]


async def test_nxdomain_is_permanent_no_records(resolver: DnsResolver) -> None:
    with pytest.raises(NoRecords) as caught:
        await resolver.mx("nowhere.test")
    assert caught.value.nxdomain
    assert not caught.value.temporary
    assert caught.value.name == "nowhere.test"
    assert caught.value.rdtype == "MX"


async def test_nodata_is_no_records_but_not_nxdomain(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "A", "192.0.2.1")

    with pytest.raises(NoRecords) as caught:
        await resolver.mx("example.test")
    assert not caught.value.nxdomain


async def test_a_name_with_names_below_it_exists(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("_25._tcp.mx.example.test", "TLSA", f"3 1 1 {'00' * 32}")

    with pytest.raises(NoRecords) as caught:
        await resolver.txt("_tcp.mx.example.test")
    assert not caught.value.nxdomain


async def test_servfail_is_temporary(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("broken.test", "MX", "10 mx.broken.test").fail("broken.test")

    with pytest.raises(TemporaryDnsError) as caught:
        await resolver.mx("broken.test")
    assert caught.value.temporary


async def test_a_slow_answer_is_a_temporary_error_within_the_timeout(dns_server: DnsServer) -> None:
    dns_server.add("slow.test", "MX", "10 mx.slow.test").delay("slow.test", 5.0)
    resolver = resolver_for(dns_server, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(TemporaryDnsError, match="timed out"):
        await resolver.mx("slow.test")
    assert time.monotonic() - started < 2.0


async def test_a_silent_nameserver_is_temporary() -> None:
    with DnsServer() as gone:
        resolver = resolver_for(gone, timeout=1.0)
    # Stopped: its port refuses (or drops) every datagram.

    with pytest.raises(TemporaryDnsError):
        await resolver.mx("example.test")


async def test_unicode_domains_are_asked_as_a_labels(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("bücher.test", "MX", "10 mx.bücher.test")

    assert await resolver.mx("Bücher.test") == [MxRecord(10, "mx.xn--bcher-kva.test")]
    assert dns_server.queries == (Query("xn--bcher-kva.test", "MX", "udp"),)


async def test_a_name_that_cannot_exist_is_nxdomain_without_asking(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    with pytest.raises(NoRecords, match="not a valid domain name") as caught:
        await resolver.mx("x" * 64 + ".test")
    assert caught.value.nxdomain
    assert dns_server.queries == ()


def test_ascii_name() -> None:
    assert ascii_name("Bücher.Example.") == "xn--bcher-kva.example"
    with pytest.raises(ValueError, match="not a valid domain name"):
        ascii_name("a..b")


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        DnsResolver(settings=DnsSettings(nameservers=(("127.0.0.1", 53),), timeout=0))


async def test_only_the_configured_nameserver_is_asked_and_no_search_list_applies(
    dns_server: DnsServer,
) -> None:
    with DnsServer() as other:
        other.add("example.com", "MX", "10 mx.example.com").add("mx", "A", "192.0.2.9")
        resolver = resolver_for(dns_server)

        with pytest.raises(NoRecords):
            await resolver.mx("example.com")  # a real domain, answered NXDOMAIN by the test server
        with pytest.raises(NoRecords):
            await resolver.addresses("mx")  # a single label stays one label: no resolv.conf search domains

        assert other.queries == ()
    assert sorted(dns_server.queries, key=lambda q: (q.name, q.rtype)) == [
        Query("example.com", "MX", "udp"),
        Query("mx", "A", "udp"),
        Query("mx", "AAAA", "udp"),
    ]


async def test_the_next_nameserver_answers_when_the_first_fails(dns_server: DnsServer) -> None:
    with DnsServer() as second:
        dns_server.fail("example.test")
        second.add("example.test", "MX", "10 mx.example.test")

        assert await resolver_for(dns_server, second).mx("example.test") == [MxRecord(10, "mx.example.test")]


async def test_answers_are_cached_for_their_ttl_and_a_zero_minimum_negative_answer_is_not(
    dns_server: DnsServer,
) -> None:
    dns_server.add("cached.test", "TXT", "v=spf1 -all", ttl=300)
    resolver = resolver_for(dns_server)
    assert await resolver.txt("cached.test") == ["v=spf1 -all"]
    assert await resolver.txt("cached.test") == ["v=spf1 -all"]
    for _ in range(2):
        with pytest.raises(NoRecords):
            await resolver.txt("absent.test")  # NXDOMAIN with an SOA whose minimum is 0 (RFC 2308)
    asked = [query.name for query in dns_server.queries if query.rtype == "TXT"]
    assert asked.count("cached.test") == 1
    assert asked.count("absent.test") == 2


async def test_cache_size_0_asks_every_time(dns_server: DnsServer) -> None:
    dns_server.add("cached.test", "TXT", "v=spf1 -all", ttl=300)
    settings = DnsSettings(nameservers=(dns_server.nameserver,), timeout=2, cache_size=0)
    resolver = DnsResolver(settings=settings)
    for _ in range(2):
        assert await resolver.txt("cached.test") == ["v=spf1 -all"]
    assert [query.name for query in dns_server.queries].count("cached.test") == 2


async def test_a_negative_answer_is_cached_for_the_soa_minimum() -> None:
    with DnsServer(negative_ttl=300) as server:
        resolver = resolver_for(server)
        for _ in range(2):
            with pytest.raises(NoRecords):
                await resolver.txt("_mta-sts.absent.test")
        assert [query.name for query in server.queries].count("_mta-sts.absent.test") == 1
