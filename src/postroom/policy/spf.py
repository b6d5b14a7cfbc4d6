"""SPF (RFC 7208): check_host() for the MAIL FROM and HELO identities, over postroom's async Resolver.

A compact evaluator rather than pyspf: pyspf's DNS goes through a module-global, synchronous hook
(``spf.DNSLookup``), so it would need a worker thread per check blocking on the event loop and a patched
global; here every lookup is an ``await`` on the configured resolver, and the RFC's limits (10 DNS-querying
terms, 2 void lookups, 10 MX / PTR names) are counted in one place. The ``exp=`` explanation is not fetched:
postroom's replies never quote remote text. It does not decide what a result means for the message
(sender_auth.py does).
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from postroom.dns import DnsError, NoRecords, Resolver

__all__ = ["SpfResult", "SpfVerdict", "check_helo", "check_host", "check_mail_from"]

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_DNS_TERMS = 10  # RFC 7208 4.6.4
_MAX_VOID = 2  # RFC 7208 4.6.4: lookups answering NXDOMAIN or no records
_MAX_NAMES = 10  # RFC 7208 4.6.4: MX and PTR names looked at
_QUALIFIERS: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_TERM = re.compile(r"([+\-~?]?)([a-z][a-z0-9_.\-]*)([:=/]?)(.*)", re.IGNORECASE | re.DOTALL)
_MACRO = re.compile(r"%(?:\{([slodiphcrtv])(\d*)(r?)([.\-+,/_=]*)\}|(.))", re.IGNORECASE)
_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """The result of one check_host(): for which identity, which domain, and why (for the log and A-R)."""

    result: SpfResult
    identity: Literal["mailfrom", "helo"]
    domain: str
    reason: str = ""


class _Abort(Exception):
    """Leaves the evaluation with a permerror or temperror (RFC 7208 4.6.4, 5.2)."""

    def __init__(self, result: SpfResult, reason: str) -> None:
        super().__init__(reason)
        self.result, self.reason = result, reason


@dataclass
class _Context:
    """One check_host() evaluation, includes and redirects shared: the limits count across all of them."""

    resolver: Resolver
    ip: IpAddress
    sender: str
    helo: str
    dns_terms: int = 0
    void: int = 0
    seen: set[str] = field(default_factory=set)

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > _MAX_DNS_TERMS:
            raise _Abort("permerror", f"more than {_MAX_DNS_TERMS} DNS-querying terms")

    async def txt(self, name: str) -> list[str]:
        try:
            return await self.resolver.txt(name)
        except NoRecords:
            self._void()
            return []
        except DnsError as exc:
            raise _Abort("temperror", f"TXT {name}: {exc.reason}") from exc

    async def addresses(self, name: str) -> list[IpAddress]:
        try:
            found = await self.resolver.addresses(name)
        except NoRecords:
            self._void()
            return []
        except DnsError as exc:
            raise _Abort("temperror", f"A/AAAA {name}: {exc.reason}") from exc
        return [ipaddress.ip_address(item) for item in found]

    async def mx_hosts(self, name: str) -> list[str]:
        try:
            records = await self.resolver.mx(name)
        except NoRecords:
            self._void()
            return []
        except DnsError as exc:
            raise _Abort("temperror", f"MX {name}: {exc.reason}") from exc
        if len(records) > _MAX_NAMES:
            raise _Abort("permerror", f"{name} has more than {_MAX_NAMES} MX records")
        return [record.exchange for record in records if record.exchange != "."]

    async def ptr_names(self, ip: IpAddress) -> list[str]:
        try:
            return (await self.resolver.ptr(str(ip)))[:_MAX_NAMES]
        except DnsError:
            return []  # RFC 7208 5.5: a failed PTR lookup is no match, not an error

    def _void(self) -> None:
        self.void += 1
        if self.void > _MAX_VOID:
            raise _Abort("permerror", f"more than {_MAX_VOID} void lookups")


async def check_mail_from(resolver: Resolver, *, ip: str, sender: str, helo: str) -> SpfVerdict:
    """RFC 7208 2.4: the MAIL FROM identity; the null sender is checked as postmaster@<helo>."""
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "postmaster", helo
    return await check_host(
        resolver,
        ip=ip,
        domain=domain,
        sender=f"{local or 'postmaster'}@{domain}",
        helo=helo,
        identity="mailfrom",
    )


async def check_helo(resolver: Resolver, *, ip: str, helo: str) -> SpfVerdict:
    """RFC 7208 2.3: the HELO identity, when it is a domain name (an address literal gives "none")."""
    if helo.startswith("["):
        return SpfVerdict("none", "helo", helo, "HELO is an address literal")
    return await check_host(
        resolver, ip=ip, domain=helo, sender=f"postmaster@{helo}", helo=helo, identity="helo"
    )


async def check_host(
    resolver: Resolver,
    *,
    ip: str,
    domain: str,
    sender: str,
    helo: str,
    identity: Literal["mailfrom", "helo"] = "mailfrom",
) -> SpfVerdict:
    """RFC 7208 4: the SPF result for ``ip`` sending as ``sender`` on behalf of ``domain``."""
    domain = domain.rstrip(".").lower()
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return SpfVerdict("none", identity, domain, "client address unknown")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # RFC 7208 5: an IPv4 client on an IPv6 socket
    if not _valid_domain(domain):
        return SpfVerdict("none", identity, domain, "not a fully qualified domain name")
    context = _Context(resolver=resolver, ip=address, sender=sender, helo=helo)
    try:
        result, reason = await _evaluate(context, domain, top=True)
    except _Abort as abort:
        result, reason = abort.result, abort.reason
    return SpfVerdict(result, identity, domain, reason)


def _valid_domain(domain: str) -> bool:
    """RFC 7208 4.3: a multi-label name, no label empty or over 63 octets."""
    labels = domain.split(".")
    return len(labels) > 1 and all(0 < len(label) <= 63 for label in labels) and len(domain) <= 253


async def _record(context: _Context, domain: str) -> str | None:
    """RFC 7208 4.5: the one TXT record starting "v=spf1"; None when there is none."""
    found = await context.txt(domain)
    records = [text for text in found if text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")]
    if len(records) > 1:
        raise _Abort("permerror", f"{domain} has {len(records)} SPF records")
    return records[0] if records else None


async def _evaluate(context: _Context, domain: str, *, top: bool = False) -> tuple[SpfResult, str]:
    if domain in context.seen:
        raise _Abort("permerror", f"{domain} includes itself")
    context.seen.add(domain)
    record = await _record(context, domain)
    if record is None:
        if top:
            return "none", f"no SPF record at {domain}"
        raise _Abort("permerror", f"no SPF record at included or redirected {domain}")
    terms = record.split()[1:]
    redirect: str | None = None
    mechanisms: list[tuple[SpfResult, str, str]] = []
    for term in terms:
        match = _TERM.fullmatch(term)
        if match is None:
            raise _Abort("permerror", f"bad term {term[:40]!r} at {domain}")
        qualifier, name, separator, value = match.groups()
        name = name.lower()
        if separator == "=":
            if qualifier:
                raise _Abort("permerror", f"a modifier takes no qualifier: {term[:40]!r}")
            if name == "redirect":
                if redirect is not None:
                    raise _Abort("permerror", f"two redirect= at {domain}")
                redirect = value
            continue  # exp= and unknown modifiers are ignored (RFC 7208 6)
        if name not in _MECHANISMS:
            raise _Abort("permerror", f"unknown mechanism {name!r} at {domain}")
        mechanisms.append((_QUALIFIERS[qualifier or "+"], name, separator + value))
    for result, name, argument in mechanisms:
        if await _matches(context, domain, name, argument):
            return result, f"{domain} matched {'' if result == 'pass' else result + ' '}{name}{argument}"
    if redirect is not None:  # RFC 7208 6.1: only when no mechanism matched; "all" makes it unused
        context.count_term()
        target = _expand(context, redirect, domain)
        return await _evaluate(context, target)
    return "neutral", f"no mechanism matched at {domain}"


async def _matches(context: _Context, domain: str, name: str, argument: str) -> bool:
    if name == "all":
        if argument:
            raise _Abort("permerror", "all takes no argument")
        return True
    if name in ("ip4", "ip6"):
        return _ip_matches(context.ip, name, argument)
    context.count_term()
    if name == "include":
        return await _include(context, domain, argument)
    if name == "exists":
        target = _expand(context, _required(argument, name), domain)
        return bool(await _a_records(context, target))
    target_text, prefix4, prefix6 = _split_cidr(argument, name)
    target = _expand(context, target_text, domain) if target_text else domain
    prefix = prefix4 if isinstance(context.ip, ipaddress.IPv4Address) else prefix6
    if name == "a":
        return _in_any(context.ip, await context.addresses(target), prefix)
    if name == "mx":
        for host in await context.mx_hosts(target):
            if _in_any(context.ip, await context.addresses(host), prefix):
                return True
        return False
    return await _ptr_matches(context, target)  # "ptr": RFC 7208 5.5 (discouraged, still defined)


async def _a_records(context: _Context, target: str) -> list[IpAddress]:
    """exists: always an A lookup (RFC 7208 5.7), whatever the client's family."""
    return [ip for ip in await context.addresses(target) if isinstance(ip, ipaddress.IPv4Address)]


async def _include(context: _Context, domain: str, argument: str) -> bool:
    """RFC 7208 5.2: pass matches; fail, softfail and neutral do not; errors propagate."""
    target = _expand(context, _required(argument, "include"), domain)
    try:
        result, _ = await _evaluate(context, target)
    finally:
        context.seen.discard(target)  # the same domain may be included twice side by side, not nested
    return result == "pass"


async def _ptr_matches(context: _Context, target: str) -> bool:
    for name in await context.ptr_names(context.ip):
        if name != target and not name.endswith("." + target):
            continue
        if context.ip in await context.addresses(name):
            return True
    return False


def _required(argument: str, name: str) -> str:
    if not argument.startswith(":") or len(argument) < 2:
        raise _Abort("permerror", f"{name} needs a domain")
    return argument[1:]


def _split_cidr(argument: str, name: str) -> tuple[str, int, int]:
    """ "a:host/24//64" -> ("host", 24, 64); a bare "/24" keeps the current domain."""
    if argument and argument[0] not in ":/":
        raise _Abort("permerror", f"bad {name} argument")
    match = _CIDR.fullmatch(argument.removeprefix(":"))
    assert match is not None  # the pattern matches any text
    target, prefix4, prefix6 = match.group(1), match.group(2), match.group(3)
    four, six = int(prefix4 or 32), int(prefix6 or 128)
    if four > 32 or six > 128 or (argument.startswith(":") and not target):
        raise _Abort("permerror", f"bad {name} argument")
    return target, four, six


def _ip_matches(ip: IpAddress, name: str, argument: str) -> bool:
    try:
        network = ipaddress.ip_network(_required(argument, name), strict=False)
    except ValueError:
        raise _Abort("permerror", f"bad {name} network {argument[:40]!r}") from None
    if (name == "ip4") != (network.version == 4):
        raise _Abort("permerror", f"{name} with a network of the other family")
    return ip.version == network.version and ip in network


def _in_any(ip: IpAddress, candidates: list[IpAddress], prefix: int) -> bool:
    for candidate in candidates:
        if candidate.version == ip.version:
            network = ipaddress.ip_network(f"{candidate}/{prefix}", strict=False)
            if ip in network:
                return True
    return False


def _expand(context: _Context, text: str, domain: str) -> str:
    """RFC 7208 7: macro expansion in a domain-spec; the result is trimmed to 253 octets from the left."""

    def replace(match: re.Match[str]) -> str:
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            if escape not in "%_-":
                raise _Abort("permerror", f"bad macro %{escape}")
            return {"%": "%", "_": " ", "-": "%20"}[escape]
        value = _macro_value(context, letter.lower(), domain)
        parts = re.split("[" + re.escape(delimiters or ".") + "]", value)
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise _Abort("permerror", "macro keeps zero labels")
            parts = parts[-int(digits) :]
        expanded = ".".join(parts)
        return urllib.parse.quote(expanded, safe="") if letter.isupper() else expanded

    if "%" not in text:
        return text.rstrip(".").lower()
    if re.search(r"%(?![{%_\-])", text):
        raise _Abort("permerror", f"bad macro in {text[:40]!r}")
    expanded = _MACRO.sub(replace, text).rstrip(".")
    while len(expanded) > 253 and "." in expanded:
        expanded = expanded.split(".", 1)[1]
    return expanded.lower()


def _macro_value(context: _Context, letter: str, domain: str) -> str:
    local, _, sender_domain = context.sender.rpartition("@")
    ip = context.ip
    values = {
        "s": context.sender,
        "l": local or "postmaster",
        "o": sender_domain,
        "d": domain,
        "h": context.helo,
        "v": "in-addr" if ip.version == 4 else "ip6",
        "p": "unknown",  # RFC 7208 7.3: the validated name is costly and discouraged
        "i": str(ip) if ip.version == 4 else ".".join(ip.packed.hex()),
        "c": str(ip),
        "r": "unknown",
        "t": "0",
    }
    if letter in "crt":
        raise _Abort("permerror", f"macro {letter} is only for exp=")
    return values[letter]
