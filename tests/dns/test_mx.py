"""MX selection (RFC 5321 5.1, RFC 7505): the pure ordering, then mail_hosts and host_addresses over DNS."""

from __future__ import annotations

import random
from contextlib import aclosing

import pytest

from postroom.dns import (
    DnsResolver,
    HostAddresses,
    MailHost,
    MxLoop,
    MxRecord,
    NoRecords,
    NullMx,
    TemporaryDnsError,
    host_addresses,
    mail_hosts,
    order_mx,
    resolve_host,
)
from tests.helpers.dns import DnsServer, Query


def names(hosts: list[MailHost]) -> list[str]:
    return [host.name for host in hosts]


# -- order_mx (pure) ---------------------------------------------------------------------------------------


def test_lowest_preference_first() -> None:
    records = [MxRecord(20, "b.test"), MxRecord(10, "a.test"), MxRecord(30, "c.test")]

    assert order_mx("example.test", records, rng=random.Random(0)) == [
        MailHost("a.test", 10),
        MailHost("b.test", 20),
        MailHost("c.test", 30),
    ]


def test_equal_preferences_are_shuffled_by_the_rng() -> None:
    records = [MxRecord(10, "a.test"), MxRecord(10, "b.test"), MxRecord(20, "backup.test")]

    orders = {tuple(names(order_mx("example.test", records, rng=random.Random(seed)))) for seed in range(20)}

    assert orders == {("a.test", "b.test", "backup.test"), ("b.test", "a.test", "backup.test")}


def test_the_same_seed_gives_the_same_order_whatever_the_answer_order() -> None:
    records = [MxRecord(10, f"mx{i}.test") for i in range(6)]

    first = order_mx("example.test", records, rng=random.Random(7))
    again = order_mx("example.test", list(reversed(records)), rng=random.Random(7))

    assert first == again


def test_a_host_listed_twice_is_tried_once_at_its_best_preference() -> None:
    records = [MxRecord(20, "a.test"), MxRecord(10, "A.test."), MxRecord(15, "b.test")]

    assert order_mx("example.test", records, rng=random.Random(0)) == [
        MailHost("a.test", 10),
        MailHost("b.test", 15),
    ]


def test_null_mx_is_a_permanent_error() -> None:
    with pytest.raises(NullMx) as caught:
        order_mx("nomail.test", [MxRecord(0, ".")], rng=random.Random(0))
    assert not caught.value.temporary
    assert caught.value.name == "nomail.test"


def test_null_mx_among_real_mx_records_is_skipped() -> None:
    records = [MxRecord(0, "."), MxRecord(10, "mx.test")]

    assert order_mx("example.test", records, rng=random.Random(0)) == [MailHost("mx.test", 10)]


def test_no_records_in_no_hosts_out() -> None:
    assert order_mx("example.test", [], rng=random.Random(0)) == []


def test_our_own_entry_and_worse_ones_are_dropped() -> None:
    records = [MxRecord(5, "primary.test"), MxRecord(10, "us.test"), MxRecord(10, "peer.test")]
    records.append(MxRecord(20, "backup.test"))

    hosts = order_mx("example.test", records, rng=random.Random(0), local_names=["US.test."])

    assert hosts == [MailHost("primary.test", 5)]


def test_being_the_best_mx_ourselves_is_a_loop() -> None:
    records = [MxRecord(10, "us.test"), MxRecord(20, "backup.test")]

    with pytest.raises(MxLoop) as caught:
        order_mx("example.test", records, rng=random.Random(0), local_names=["us.test"])
    assert not caught.value.temporary


# -- mail_hosts -------------------------------------------------------------------------------------------


async def test_mail_hosts_orders_the_domains_mx(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "MX", "20 mx2.example.test").add(
        "example.test", "MX", "10 mx1.example.test"
    )

    hosts = await mail_hosts(resolver, "example.test", rng=random.Random(0))

    assert hosts == [MailHost("mx1.example.test", 10), MailHost("mx2.example.test", 20)]


async def test_no_mx_but_an_address_is_the_implicit_mx(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("Example.test", "A", "192.0.2.1")

    hosts = await mail_hosts(resolver, "Example.test.", rng=random.Random(0))

    assert hosts == [MailHost("example.test", 0, implicit=True)]


async def test_implicit_mx_of_a_unicode_domain_is_its_a_label(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("bücher.test", "AAAA", "2001:db8::1")

    hosts = await mail_hosts(resolver, "bücher.test", rng=random.Random(0))

    assert hosts == [MailHost("xn--bcher-kva.test", 0, implicit=True)]


async def test_no_mx_and_no_address_is_no_records(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 -all")

    with pytest.raises(NoRecords) as caught:
        await mail_hosts(resolver, "example.test", rng=random.Random(0))
    assert not caught.value.nxdomain


async def test_a_domain_that_does_not_exist_is_not_asked_for_addresses(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    with pytest.raises(NoRecords) as caught:
        await mail_hosts(resolver, "nowhere.test", rng=random.Random(0))
    assert caught.value.nxdomain
    assert dns_server.queries == (Query("nowhere.test", "MX", "udp"),)


async def test_mail_hosts_raises_null_mx(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("nomail.test", "MX", "0 .").add("nomail.test", "A", "192.0.2.1")

    with pytest.raises(NullMx, match=r"nomail\.test"):
        await mail_hosts(resolver, "nomail.test", rng=random.Random(0))


async def test_mail_hosts_passes_temporary_errors_on(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.fail("broken.test")

    with pytest.raises(TemporaryDnsError):
        await mail_hosts(resolver, "broken.test", rng=random.Random(0))


# -- addresses, host by host -----------------------------------------------------------------------------


async def test_host_addresses_resolve_each_host_only_when_asked(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.add("mx1.test", "A", "192.0.2.1").add("mx2.test", "A", "192.0.2.2")
    hosts = [MailHost("mx1.test", 10), MailHost("mx2.test", 20)]

    async with aclosing(host_addresses(resolver, hosts)) as found:
        first = await anext(found)
        assert first == HostAddresses(hosts[0], ("192.0.2.1",))
        assert {q.name for q in dns_server.queries} == {"mx1.test"}

    assert {q.name for q in dns_server.queries} == {"mx1.test"}


async def test_host_addresses_report_each_hosts_error_and_go_on(
    dns_server: DnsServer, resolver: DnsResolver
) -> None:
    dns_server.fail("broken.test").add("good.test", "AAAA", "2001:db8::25")
    hosts = [MailHost("gone.test", 10), MailHost("broken.test", 20), MailHost("good.test", 30)]

    found = [entry async for entry in host_addresses(resolver, hosts)]

    assert [entry.addresses for entry in found] == [(), (), ("2001:db8::25",)]
    assert isinstance(found[0].error, NoRecords)
    assert isinstance(found[1].error, TemporaryDnsError)
    assert found[2].error is None


async def test_resolve_host_never_raises_a_dns_error(resolver: DnsResolver) -> None:
    entry = await resolve_host(resolver, MailHost("nowhere.test", 0, implicit=True))

    assert entry.addresses == ()
    assert isinstance(entry.error, NoRecords)
