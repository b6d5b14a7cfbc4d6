"""DNS lookups as plain values: a Resolver protocol and its dnspython implementation.

This module asks questions and maps every failure to one small tree of errors; it does not decide what an
answer means for mail (MX ordering, null MX and implicit MX live in mx.py) and it does not validate DNSSEC.

Names go out as absolute names: Unicode domains (RFC 6531) are IDNA-encoded by dnspython, and no search list
from resolv.conf is ever applied. Names come back as lower-case A-labels without the final dot ("." is the root).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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
]

_T = TypeVar("_T")


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

    async def txt(self, name: str) -> list[str]:
        """Each TXT record of ``name`` as one string, its character-strings joined (RFC 7208 3.3)."""
        ...

    async def ptr(self, ip: str) -> list[str]:
        """The names an IP address maps back to (PTR under in-addr.arpa / ip6.arpa)."""
        ...

    async def tlsa(self, name: str) -> list[TlsaRecord]:
        """The TLSA records at ``name`` (e.g. "_25._tcp.mx.example.com"), not DNSSEC-validated."""
        ...


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
        resolver.lifetime = settings.timeout  # the bound on one whole lookup, all servers and retries
        resolver.timeout = min(resolver.timeout, settings.timeout)  # one attempt at one server
        self._resolver = resolver

    async def mx(self, domain: str) -> list[MxRecord]:
        rdatas = await self._query(domain, "MX")
        return [MxRecord(rdata.preference, _name_text(rdata.exchange)) for rdata in rdatas]

    async def addresses(self, host: str) -> list[str]:
        found = await asyncio.gather(self._addresses_or_error(host, "A"), self._addresses_or_error(host, "AAAA"))
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

    async def _query(self, name: str, rdtype: str) -> Sequence[Any]:
        """Ask for ``rdtype`` at ``name``; the answer's rdatas, or a DnsError (never a dnspython error)."""
        return await _mapping_errors(name, rdtype, lambda: self._resolve(name, rdtype))

    async def _resolve(self, name: str, rdtype: str) -> Sequence[Any]:
        qname = dns.name.from_text(name)  # absolute (relative to the root); IDNA-encodes Unicode
        answer = await self._resolver.resolve(qname, dns.rdatatype.from_text(rdtype), search=False)
        return list(answer)


async def _mapping_errors(name: str, rdtype: str, lookup: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``lookup`` and turn dnspython's exceptions into the DnsError tree; the one place that does."""
    try:
        return await lookup()
    except dns.resolver.NXDOMAIN as exc:
        raise NoRecords(name, rdtype, "no such domain (NXDOMAIN)", nxdomain=True) from exc
    except dns.resolver.NoAnswer as exc:
        raise NoRecords(name, rdtype, "no records of this type (NODATA)", nxdomain=False) from exc
    except dns.resolver.YXDOMAIN as exc:
        raise NoRecords(name, rdtype, "name too long after DNAME substitution", nxdomain=True) from exc
    except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.IDNAException) as exc:
        raise NoRecords(name, rdtype, f"not a valid domain name ({exc})", nxdomain=True) from exc
    except dns.exception.Timeout as exc:
        raise TemporaryDnsError(name, rdtype, "timed out") from exc
    except dns.resolver.NoNameservers as exc:
        raise TemporaryDnsError(name, rdtype, "no nameserver answered (SERVFAIL, REFUSED or unreachable)") from exc
    except dns.exception.DNSException as exc:
        # A malformed or unexpected answer: nothing the domain told us for sure, so ask again later.
        raise TemporaryDnsError(name, rdtype, f"bad answer ({type(exc).__name__})") from exc
