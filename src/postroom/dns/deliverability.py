"""The DNS records a local domain's mail depends on, checked against what this server is: MX points at our
hostname, SPF lets our address send (a light evaluation: a, mx, ip4, ip6, include), the DKIM key matches
ours, DMARC is present, and our address's PTR names our hostname. Each answer is a Finding with the exact
record to publish when one is missing or wrong. It asks questions through a Resolver; it decides nothing
about mail in flight (that is policy's job) and reads no files (the caller brings the DKIM key).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import dns.reversename

from postroom.dns.resolver import DnsError, Resolver, TemporaryDnsError

__all__ = ["DkimExpectation", "Finding", "check_domain", "check_ptr", "domain_findings", "our_address"]

Status = Literal["OK", "WARN", "FAIL"]
_MAX_INCLUDES = 5  # RFC 7208 4.6.4 allows 10 lookups; a light check follows a few includes


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result; ``record`` is the zone-file line to publish (empty when nothing is to do)."""

    status: Status
    check: str
    subject: str
    message: str
    record: str = ""


@dataclass(frozen=True, slots=True)
class DkimExpectation:
    """Our DKIM key for a domain: where it goes, the record text, and its p= value."""

    name: str
    value: str
    public_key: str


async def our_address(resolver: Resolver, hostname: str) -> tuple[str | None, Finding]:
    """The public address mail leaves from: the first address of ``hostname``."""
    try:
        addresses = await resolver.addresses(hostname)
    except DnsError as exc:
        status: Status = "WARN" if exc.temporary else "FAIL"
        return None, Finding(
            status, "address", hostname, f"{hostname} has no address ({exc.reason}); give --ip",
            f"{hostname}. IN A <this server's public IPv4 address>",
        )
    return addresses[0], Finding("OK", "address", hostname, f"{hostname} has address {addresses[0]}")


async def check_domain(
    resolver: Resolver, domain: str, *, hostname: str, ip: str | None, dkim: DkimExpectation | None
) -> list[Finding]:
    """MX, SPF, DKIM and DMARC of one local domain."""
    return [
        await _check_mx(resolver, domain, hostname),
        await _check_spf(resolver, domain, hostname, ip),
        await _check_dkim(resolver, domain, dkim),
        await _check_dmarc(resolver, domain),
    ]


async def domain_findings(
    resolver: Resolver,
    *,
    hostname: str,
    domains: Sequence[str],
    ip: str | None,
    dkim_for: Callable[[str], DkimExpectation | None],
) -> list[Finding]:
    """Every DNS finding: our address (unless ``ip`` is given), each domain's records, our PTR."""
    findings = []
    if ip is None:
        ip, found = await our_address(resolver, hostname)
        findings.append(found)
    for domain in domains:
        findings += await check_domain(resolver, domain, hostname=hostname, ip=ip, dkim=dkim_for(domain))
    if ip is not None:
        findings.append(await check_ptr(resolver, ip, hostname))
    return findings


async def check_ptr(resolver: Resolver, ip: str, hostname: str) -> Finding:
    """Forward-confirmed reverse DNS: the PTR of ``ip`` names ``hostname`` (receivers check it)."""
    reverse = dns.reversename.from_address(ip).to_text()
    record = f"{reverse} IN PTR {hostname}. (asked of whoever gave you the address)"
    try:
        names = await resolver.ptr(ip)
    except DnsError as exc:
        return _lookup_failed("ptr", ip, exc, record)
    if hostname.lower() in names:
        return Finding("OK", "ptr", ip, f"{ip} points back to {hostname}")
    return Finding("FAIL", "ptr", ip, f"{ip} points back to {', '.join(names)}, not {hostname}", record)


def _lookup_failed(check: str, subject: str, exc: DnsError, record: str) -> Finding:
    if isinstance(exc, TemporaryDnsError):
        return Finding("WARN", check, subject, f"lookup failed for now: {exc}")
    return Finding("FAIL", check, subject, f"no record: {exc.reason}", record)


async def _check_mx(resolver: Resolver, domain: str, hostname: str) -> Finding:
    record = f"{domain}. IN MX 10 {hostname}."
    try:
        exchanges = [mx.exchange for mx in await resolver.mx(domain)]
    except DnsError as exc:
        return _lookup_failed("mx", domain, exc, record)
    if hostname.lower() in exchanges:
        return Finding("OK", "mx", domain, f"MX points to {hostname}")
    return Finding("FAIL", "mx", domain, f"MX points to {', '.join(exchanges)}, not to {hostname}", record)


async def _txt(resolver: Resolver, name: str, prefix: str) -> list[str] | DnsError:
    try:
        records = await resolver.txt(name)
    except DnsError as exc:
        return exc
    return [text for text in records if text.lower().startswith(prefix)]


async def _check_spf(resolver: Resolver, domain: str, hostname: str, ip: str | None) -> Finding:
    record = f'{domain}. IN TXT "v=spf1 mx -all"'
    found = await _txt(resolver, domain, "v=spf1")
    if isinstance(found, DnsError) and found.temporary:
        return _lookup_failed("spf", domain, found, record)
    if isinstance(found, DnsError) or not found:
        return Finding("FAIL", "spf", domain, "no SPF record", record)
    if len(found) > 1:
        return Finding("FAIL", "spf", domain, "more than one SPF record (RFC 7208 3.2: permerror)", record)
    if await _spf_allows(resolver, domain, found[0], hostname, ip, depth=0):
        return Finding("OK", "spf", domain, f"SPF lets {hostname} send: {found[0]}")
    fixed = found[0].replace("v=spf1", "v=spf1 mx", 1)
    message = f"SPF does not let {hostname} ({ip or 'address unknown'}) send: {found[0]}"
    return Finding("FAIL", "spf", domain, message, f'{domain}. IN TXT "{fixed}"')


async def _spf_allows(
    resolver: Resolver, domain: str, text: str, hostname: str, ip: str | None, *, depth: int
) -> bool:
    """A light SPF evaluation: does a pass mechanism name our hostname or address?"""
    for term in text.split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        mechanism = term.lstrip("+-~?").lower()
        name, _, argument = mechanism.partition(":")
        argument = argument.split("/")[0]
        if qualifier != "+":
            continue
        if name in ("ip4", "ip6") and ip is not None and _in_network(ip, mechanism.partition(":")[2]):
            return True
        if name == "a" and await _host_is_us(resolver, argument or domain, hostname, ip):
            return True
        if name == "mx" and await _mx_is_us(resolver, argument or domain, hostname, ip):
            return True
        if name == "include" and argument and depth < _MAX_INCLUDES:
            included = await _txt(resolver, argument, "v=spf1")
            if isinstance(included, list) and included and await _spf_allows(
                resolver, argument, included[0], hostname, ip, depth=depth + 1
            ):
                return True
    return False


def _in_network(ip: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


async def _host_is_us(resolver: Resolver, host: str, hostname: str, ip: str | None) -> bool:
    if host.lower() == hostname.lower():
        return True
    try:
        return ip is not None and ip in await resolver.addresses(host)
    except DnsError:
        return False


async def _mx_is_us(resolver: Resolver, domain: str, hostname: str, ip: str | None) -> bool:
    try:
        exchanges = [mx.exchange for mx in await resolver.mx(domain)]
    except DnsError:
        return False
    for exchange in exchanges:
        if await _host_is_us(resolver, exchange, hostname, ip):
            return True
    return False


async def _check_dkim(resolver: Resolver, domain: str, dkim: DkimExpectation | None) -> Finding:
    if dkim is None:
        return Finding(
            "WARN", "dkim", domain, "no DKIM key for this domain: run `postroom dkim keygen " + domain + "`"
        )
    record = f'{dkim.name}. IN TXT "{dkim.value}"'
    found = await _txt(resolver, dkim.name, "v=dkim1")
    if isinstance(found, DnsError):
        return _lookup_failed("dkim", dkim.name, found, record)
    published = [_p_value(text) for text in found]
    if dkim.public_key in published:
        return Finding("OK", "dkim", dkim.name, "the published key matches ours")
    if not found:
        return Finding("FAIL", "dkim", dkim.name, "no DKIM key record", record)
    return Finding("FAIL", "dkim", dkim.name, "the published key is not ours", record)


def _p_value(text: str) -> str | None:
    for tag in text.split(";"):
        name, sep, value = tag.partition("=")
        if sep and name.strip() == "p":
            return "".join(value.split())
    return None


async def _check_dmarc(resolver: Resolver, domain: str) -> Finding:
    name = f"_dmarc.{domain}"
    record = f'{name}. IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@{domain}"'
    found = await _txt(resolver, name, "v=dmarc1")
    if isinstance(found, DnsError) and found.temporary:
        return _lookup_failed("dmarc", name, found, record)
    if isinstance(found, DnsError) or not found:
        return Finding("FAIL", "dmarc", name, "no DMARC record", record)
    return Finding("OK", "dmarc", name, f"DMARC present: {found[0]}")
