"""DNSBL and DNSWL lookups through postroom's resolver against the loopback DNS server."""

from __future__ import annotations

import pytest

from postroom.config.schema import DnsSettings
from postroom.dns import DnsResolver
from postroom.observe.log import Logger
from postroom.policy.dnsbl import DnsblChecker, Listing, query_name
from tests.helpers.dns import DnsServer
from tests.helpers.fakes import FakeClock, Records


def _checker(
    dns_server: DnsServer,
    clock: FakeClock,
    log: Logger,
    *,
    blocklists: tuple[str, ...] = ("bl.test",),
    allowlists: tuple[str, ...] = (),
    timeout: float = 3.0,
) -> DnsblChecker:
    return DnsblChecker(
        resolver=DnsResolver(settings=DnsSettings(nameservers=(dns_server.nameserver,), timeout=2)),
        blocklists=blocklists,
        allowlists=allowlists,
        timeout=timeout,
        cache_seconds=60,
        clock=clock,
        log=log,
    )


def test_query_names_are_reversed_octets_and_nibbles() -> None:
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.99", "bl.test.") == "99.2.0.192.bl.test"
    assert query_name("2001:db8:1:2::ab", "bl.test") == (
        "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    )
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        query_name("unknown", "bl.test")


async def test_listed_and_unlisted(dns_server: DnsServer, clock: FakeClock, log: Logger) -> None:
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add(
        "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test", "A", "127.0.0.4"
    )
    checker = _checker(dns_server, clock, log, blocklists=("other.test", "bl.test"))
    assert await checker.check("127.0.0.2") == Listing(blocked_by="bl.test")
    assert await checker.check("2001:db8:1:2::ab") == Listing(blocked_by="bl.test")
    assert await checker.check("127.0.0.3") == Listing()  # NXDOMAIN


async def test_a_dnswl_hit_skips_the_block_lists(
    dns_server: DnsServer, clock: FakeClock, log: Logger
) -> None:
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("2.0.0.127.wl.test", "A", "127.0.10.2")
    checker = _checker(dns_server, clock, log, allowlists=("wl.test",))
    assert await checker.check("127.0.0.2") == Listing(allowed_by="wl.test")
    assert not [query for query in dns_server.queries if query.name.endswith("bl.test")]


async def test_answers_are_cached_until_they_expire(
    dns_server: DnsServer, clock: FakeClock, log: Logger
) -> None:
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    checker = _checker(dns_server, clock, log)
    assert (await checker.check("127.0.0.2")).blocked_by == "bl.test"
    dns_server.remove("2.0.0.127.bl.test")
    assert (await checker.check("127.0.0.2")).blocked_by == "bl.test"  # from the cache
    assert len(dns_server.queries) == 1
    clock.now += 61
    assert await checker.check("127.0.0.2") == Listing()
    assert len(dns_server.queries) == 2


async def test_a_refused_query_code_is_not_a_listing(
    dns_server: DnsServer, clock: FakeClock, log: Logger, records: Records
) -> None:
    dns_server.add("2.0.0.127.bl.test", "A", "127.255.255.254")  # Spamhaus: query via a public resolver
    dns_server.add("3.0.0.127.bl.test", "A", "192.0.2.1")  # a resolver rewriting NXDOMAIN
    checker = _checker(dns_server, clock, log)
    assert await checker.check("127.0.0.2") == Listing()
    assert await checker.check("127.0.0.3") == Listing()
    assert [r["zone"] for r in records.events("dnsbl.refused_query")] == ["bl.test"]
    assert len(records.events("dnsbl.bad_answer")) == 1


async def test_a_slow_list_fails_open_with_a_log_line(
    dns_server: DnsServer, clock: FakeClock, log: Logger, records: Records
) -> None:
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2").delay("2.0.0.127.bl.test", 3)
    checker = _checker(dns_server, clock, log, timeout=0.5)
    assert await checker.check("127.0.0.2") == Listing()
    assert records.events("dnsbl.timeout")[0]["client"] == "127.0.0.2"


async def test_a_broken_list_fails_open_and_is_asked_again(
    dns_server: DnsServer, clock: FakeClock, log: Logger, records: Records
) -> None:
    dns_server.fail("2.0.0.127.bl.test")
    checker = _checker(dns_server, clock, log)
    assert await checker.check("127.0.0.2") == Listing()
    assert await checker.check("127.0.0.2") == Listing()
    assert len(records.events("dnsbl.error")) == 2  # errors are not cached
