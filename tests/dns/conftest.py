"""Fixtures: a loopback DNS server per test and a DnsResolver that asks only it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from postroom.config.schema import DnsSettings
from postroom.dns import DnsResolver
from tests.helpers.dns import DnsServer


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return DnsResolver(settings=DnsSettings(nameservers=(dns_server.nameserver,), timeout=2.0))
