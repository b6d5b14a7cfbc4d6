"""Fixtures: a DnsResolver that asks only the loopback test DNS server (dns_server, tests/conftest.py)."""

from __future__ import annotations

import pytest

from postroom.config.schema import DnsSettings
from postroom.dns import DnsResolver
from tests.helpers.dns import DnsServer


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return DnsResolver(settings=DnsSettings(nameservers=(dns_server.nameserver,), timeout=2.0))
