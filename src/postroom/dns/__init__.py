"""Async DNS resolution (MX, A/AAAA, TXT, PTR, TLSA) with configurable nameservers, and MX host selection."""

from __future__ import annotations

from postroom.dns.mx import (
    HostAddresses,
    MailHost,
    MxLoop,
    NullMx,
    host_addresses,
    mail_hosts,
    order_mx,
    resolve_host,
)
from postroom.dns.resolver import (
    DnsError,
    DnsResolver,
    MxRecord,
    NoRecords,
    Resolver,
    TemporaryDnsError,
    TlsaRecord,
    ascii_name,
)

__all__ = [
    "DnsError",
    "DnsResolver",
    "HostAddresses",
    "MailHost",
    "MxLoop",
    "MxRecord",
    "NoRecords",
    "NullMx",
    "Resolver",
    "TemporaryDnsError",
    "TlsaRecord",
    "ascii_name",
    "host_addresses",
    "mail_hosts",
    "order_mx",
    "resolve_host",
]
