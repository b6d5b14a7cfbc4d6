"""The loopback DNS server that tests use: its zone, its failures, its bounds."""

from __future__ import annotations

import socket
import time

import pytest
from dnslib import DNSRecord

from postroom.dns import DnsResolver, MxRecord, NoRecords
from tests.helpers.dns import DnsServer, Query


def ask(server: DnsServer, name: str, rtype: str) -> DNSRecord:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(DNSRecord.question(name, rtype).pack(), (server.host, server.port))
        return DNSRecord.parse(sock.recv(65535))


def test_address_is_host_and_port_as_in_the_config(dns_server: DnsServer) -> None:
    assert dns_server.address == f"127.0.0.1:{dns_server.port}"
    assert dns_server.nameserver == ("127.0.0.1", dns_server.port)
    assert dns_server.port > 0


def test_a_stopped_server_has_no_address() -> None:
    server = DnsServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.address


def test_answers_are_authoritative_and_unknown_names_nxdomain(dns_server: DnsServer) -> None:
    dns_server.add("example.test", "A", "192.0.2.1")

    found, missing = ask(dns_server, "example.test", "A"), ask(dns_server, "example.org", "A")

    assert found.header.aa == 1
    assert [str(rr.rdata) for rr in found.rr] == ["192.0.2.1"]
    assert missing.header.rcode == 3  # NXDOMAIN


def test_txt_lists_keep_their_character_strings(dns_server: DnsServer) -> None:
    dns_server.add("example.test", "TXT", ["one", "two"])

    assert ask(dns_server, "example.test", "TXT").rr[0].rdata.data == [b"one", b"two"]
    with pytest.raises(ValueError, match="255 octets"):
        dns_server.add("example.test", "TXT", ["x" * 256])


def test_garbage_is_ignored_and_serving_goes_on(dns_server: DnsServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"\x00\x01garbage", (dns_server.host, dns_server.port))
    dns_server.add("example.test", "A", "192.0.2.1")

    assert ask(dns_server, "example.test", "A").header.rcode == 0


async def test_remove_and_reset(dns_server: DnsServer, resolver: DnsResolver) -> None:
    dns_server.add("example.test", "MX", "10 mx.example.test").add("example.test", "A", "192.0.2.1")

    dns_server.remove("example.test", "A")
    assert await resolver.mx("example.test") == [MxRecord(10, "mx.example.test")]
    dns_server.reset()

    assert dns_server.queries == ()
    with pytest.raises(NoRecords):
        await resolver.mx("example.test")


def test_stop_is_bounded_with_an_answer_still_delayed() -> None:
    server = DnsServer().start()
    server.delay("slow.test", 60.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(DNSRecord.question("slow.test", "A").pack(), (server.host, server.port))
        deadline = time.monotonic() + 2.0
        while not server.queries and time.monotonic() < deadline:
            time.sleep(0.01)

        started = time.monotonic()
        server.stop()

    assert time.monotonic() - started < 2.0
    assert server.queries == (Query("slow.test", "A", "udp"),)  # the log outlives the server
