"""DNS lookups as plain values: a Resolver protocol and its dnspython implementation.

This module asks questions and maps every failure to one small tree of errors; it does not decide what an
answer means for mail (MX ordering, null MX and implicit MX live in mx.py) and it does not validate DNSSEC.

Names go out as absolute names: Unicode domains (RFC 6531) are IDNA-encoded by dnspython, and no search list
from resolv.conf is ever applied. Names come back as lower-case A-labels without the final dot ("." is the
root).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from postroom.config.schema import DnsSettings

__all__ = [
    "DnsError",
    "DnsResolver",
    "MxRecord",
    "NoRecords",
    "Resolver",
    "TemporaryDnsError",
    "TlsaRecord",
    "ascii_name",
]


class DnsError(Exception):
    """A lookup that gave no usable answer. ``temporary`` says whether asking again later may help."""

    temporary: bool = False

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"{rdtype} {name}: {reason}")
        self.name, self.rdtype, self.reason = name, rdtype, reason


class NoRecords(DnsError):
    """An authoritative "no": the name does not exist (NXDOMAIN) or has no records of this type (NODATA).

    A name that cannot exist (an empty label, over 255 octets, invalid IDNA) is reported as NXDOMAIN.
    """

    def __init__(self, name: str, rdtype: str, reason: str, *, nxdomain: bool) -> None:
        super().__init__(name, rdtype, reason)
        self.nxdomain = nxdomain


class TemporaryDnsError(DnsError):
    """No answer for now: a timeout, SERVFAIL or REFUSED, or no nameserver answered. Try again later."""

    temporary = True


@dataclass(frozen=True, slots=True)
class MxRecord:
    """One MX record (RFC 5321 5.1). ``exchange`` is "." for a null MX (RFC 7505)."""

    preference: int
    exchange: str


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    """One TLSA record (RFC 6698). Not DNSSEC-validated: do not base DANE on it without validation."""

    usage: int
    selector: int
    matching_type: int
    data: bytes


class Resolver(Protocol):
    """What the other rooms need from DNS. Every method raises NoRecords or TemporaryDnsError."""

    async def mx(self, domain: str) -> list[MxRecord]:
        """The MX records of ``domain`` in answer order (see mx.py for the order to try them in)."""
        ...

    async def addresses(self, host: str) -> list[str]:
        """The IPv4 then IPv6 addresses of ``host`` (A, then AAAA)."""
        ...

    async def ipv4(self, name: str) -> list[str]:
        """The A records of ``name`` alone (DNSBL zones answer 127.0.0.x; NXDOMAIN means "not listed")."""
        ...

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of ``name`` as one string, its character-strings joined (RFC 7208 3.3)."""
        ...

    async def ptr(self, ip: str) -> list[str]:
        """The names an IP address maps back to (PTR under in-addr.arpa / ip6.arpa)."""
        ...

    async def tlsa(self, name: str) -> list[TlsaRecord]:
        """The TLSA records at ``name`` (e.g. "_25._tcp.mx.example.com"), not DNSSEC-validated."""
        ...


def ascii_name(name: str) -> str:
    """``name`` as the resolver sends it: a lower-case A-label without the final dot ("bücher.example" ->
    "xn--bcher-kva.example"). Raises ValueError for a name that cannot exist."""
    try:
        return _name_text(dns.name.from_text(name))
    except dns.exception.DNSException as exc:
        raise ValueError(f"not a valid domain name: {name!r} ({exc})") from exc


def _name_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class DnsResolver:
    """The Resolver over dnspython's asyncio resolver, asking the configured nameservers only.

    With no nameservers configured it reads the system's resolv.conf once, when built.
    """

    def __init__(self, *, settings: DnsSettings) -> None:
        if settings.timeout <= 0:
            raise ValueError("dns timeout must be positive")
        if settings.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in settings.nameservers
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                raise DnsError(".", "-", "no [dns] nameservers and no usable resolv.conf") from exc
        resolver.search = []
        if settings.cache_size > 0:  # one cache for every room that asks (RFC 2308 negative caching too)
            resolver.cache = dns.resolver.LRUCache(settings.cache_size)
        resolver.lifetime = settings.timeout  # the bound on one whole lookup, all servers and retries
        resolver.timeout = min(resolver.timeout, settings.timeout)  # one attempt at one server
        self._resolver = resolver

    async def mx(self, domain: str) -> list[MxRecord]:
        rdatas = await self._query(domain, "MX")
        return [MxRecord(rdata.preference, _name_text(rdata.exchange)) for rdata in rdatas]

    async def addresses(self, host: str) -> list[str]:
        found = await asyncio.gather(
            self._addresses_or_error(host, "A"), self._addresses_or_error(host, "AAAA")
        )
        addresses = [address for result in found if isinstance(result, list) for address in result]
        if addresses:
            # One family answering is enough to try delivery; the other's failure is not the domain's answer.
            return addresses
        errors = [result for result in found if isinstance(result, DnsError)]
        temporary = [error for error in errors if error.temporary]
        if temporary:
            raise temporary[0]
        nxdomain = any(isinstance(error, NoRecords) and error.nxdomain for error in errors)
        raise NoRecords(host, "A/AAAA", "no address records", nxdomain=nxdomain)

    async def ipv4(self, name: str) -> list[str]:
        rdatas = await self._query(name, "A")
        return [str(ipaddress.ip_address(rdata.address)) for rdata in rdatas]

    async def txt(self, name: str) -> list[str]:
        rdatas = await self._query(name, "TXT")
        # RFC 7208 3.3: the character-strings of one record are joined without spaces.
        return [b"".join(rdata.strings).decode("utf-8", errors="replace") for rdata in rdatas]

    async def ptr(self, ip: str) -> list[str]:
        reverse = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
        rdatas = await self._query(reverse.to_text(), "PTR")
        return [_name_text(rdata.target) for rdata in rdatas]

    async def tlsa(self, name: str) -> list[TlsaRecord]:
        rdatas = await self._query(name, "TLSA")
        return [TlsaRecord(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert)) for rdata in rdatas]

    async def _addresses_or_error(self, host: str, rdtype: str) -> list[str] | DnsError:
        try:
            rdatas = await self._query(host, rdtype)
        except DnsError as error:
            return error
        return [str(ipaddress.ip_address(rdata.address)) for rdata in rdatas]

    async def _query(self, name: str, rdtype: str) -> list[Any]:
        """Ask for ``rdtype`` at ``name``: the answer's rdatas, or a DnsError (never a dnspython error)."""
        try:
            qname = dns.name.from_text(name)  # absolute (relative to the root); IDNA-encodes Unicode
            answer = await self._resolver.resolve(qname, dns.rdatatype.from_text(rdtype), search=False)
        except dns.exception.DNSException as exc:
            raise _dns_error(exc, name, rdtype) from exc
        return list(answer)


def _dns_error(exc: dns.exception.DNSException, name: str, rdtype: str) -> DnsError:
    """The one place that turns dnspython's exceptions into the DnsError tree."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return NoRecords(name, rdtype, "no such domain (NXDOMAIN)", nxdomain=True)
    if isinstance(exc, dns.resolver.NoAnswer):
        return NoRecords(name, rdtype, "no records of this type (NODATA)", nxdomain=False)
    if isinstance(exc, dns.resolver.YXDOMAIN):
        return NoRecords(name, rdtype, "name too long after DNAME substitution", nxdomain=True)
    if isinstance(exc, _INVALID_NAME):
        return NoRecords(name, rdtype, f"not a valid domain name ({exc})", nxdomain=True)
    if isinstance(exc, dns.exception.Timeout):
        return TemporaryDnsError(name, rdtype, "timed out")
    if isinstance(exc, dns.resolver.NoNameservers):
        return TemporaryDnsError(name, rdtype, "no nameserver answered (SERVFAIL, REFUSED or unreachable)")
    # A malformed or unexpected answer: nothing the domain told us for sure, so ask again later.
    return TemporaryDnsError(name, rdtype, f"bad answer ({type(exc).__name__})")


_INVALID_NAME = (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.IDNAException)
