"""DMARC (RFC 7489): the RFC5322.From domain, its policy record, identifier alignment, and the result.

The organizational domain comes from the Public Suffix List bundled with ``publicsuffixlist`` (no network
at runtime). It only evaluates; what a "reject" or "quarantine" does to the message is sender_auth.py's.
Reports (rua/ruf) are not sent.
"""

from __future__ import annotations

import email.utils
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from publicsuffixlist import PublicSuffixList

from postroom.dns import DnsError, NoRecords, Resolver
from postroom.policy.dkim import DkimVerdict
from postroom.policy.spf import SpfVerdict

__all__ = ["DmarcPolicy", "DmarcRecord", "DmarcVerdict", "OrganizationalDomains", "evaluate", "from_domain"]

DmarcPolicy = Literal["none", "quarantine", "reject"]
DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]

_POLICIES: tuple[DmarcPolicy, ...] = ("none", "quarantine", "reject")
_MAX_HEADER_BYTES = 256 * 1024  # the header section we look at for From:


class OrganizationalDomains:
    """RFC 7489 3.2: a domain's organizational domain, from the bundled Public Suffix List."""

    def __init__(self) -> None:
        self._list = PublicSuffixList()

    def of(self, domain: str) -> str:
        domain = domain.rstrip(".").lower()
        return self._list.privatesuffix(domain) or domain


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record that decide a message's fate (RFC 7489 6.3)."""

    policy: DmarcPolicy
    subdomain_policy: DmarcPolicy | None = None
    strict_dkim: bool = False
    strict_spf: bool = False
    percent: int = 100


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """The result for the From domain; ``policy`` is what its owner asks for a failing message, after pct."""

    result: DmarcResult
    from_domain: str = ""
    policy: DmarcPolicy = "none"
    reason: str = ""


def from_domain(message: bytes) -> str | None:
    """The domain of the one RFC5322.From address; None when there is not exactly one (RFC 7489 6.6.1)."""
    header_end = message.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
    section = message[: header_end if header_end >= 0 else _MAX_HEADER_BYTES].decode("utf-8", "replace")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", section)
    values = [line.split(":", 1)[1] for line in unfolded.split("\r\n") if line.lower().startswith("from:")]
    if len(values) != 1:
        return None
    addresses = [address for _, address in email.utils.getaddresses(values) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


def parse_record(text: str) -> DmarcRecord | None:
    """RFC 7489 6.3: None for a record that is not usable (no v=DMARC1 first, or no valid p=)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.strip().startswith("v"):
        return None
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        return None
    subdomain = tags.get("sp", "").lower()
    try:
        percent = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        percent = 100
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain if subdomain in _POLICIES else None,
        strict_dkim=tags.get("adkim", "r").lower() == "s",
        strict_spf=tags.get("aspf", "r").lower() == "s",
        percent=percent,
    )


async def evaluate(
    message: bytes,
    *,
    resolver: Resolver,
    organizations: OrganizationalDomains,
    spf: SpfVerdict,
    dkim: Sequence[DkimVerdict],
    chance: Callable[[], float] = random.random,
) -> DmarcVerdict:
    """RFC 7489 6.6: the DMARC result of one message given its SPF (MAIL FROM) and DKIM results."""
    domain = from_domain(message)
    if domain is None:
        return DmarcVerdict("permerror", reason="not exactly one From address")
    organization = organizations.of(domain)
    try:
        record = await _find_record(resolver, domain, organization)
    except DnsError as exc:
        return DmarcVerdict("temperror", domain, reason=f"record lookup: {exc.reason}")
    if record is None:
        return DmarcVerdict("none", domain, reason="no DMARC record")
    policy = record.policy
    if domain != organization and record.subdomain_policy is not None:
        policy = record.subdomain_policy
    aligned = _aligned(
        domain=domain,
        organization=organization,
        record=record,
        spf=spf,
        dkim=dkim,
        organizations=organizations,
    )
    if aligned:
        return DmarcVerdict("pass", domain, policy, reason=aligned)
    if record.percent < 100 and chance() * 100 >= record.percent:
        # RFC 7489 6.6.4: outside the sample, apply the next less strict policy
        policy = _POLICIES[max(0, _POLICIES.index(policy) - 1)]
    return DmarcVerdict("fail", domain, policy, reason="neither SPF nor DKIM aligned with the From domain")


async def _find_record(resolver: Resolver, domain: str, organization: str) -> DmarcRecord | None:
    """RFC 7489 6.6.3: _dmarc.<From domain>, then _dmarc.<organizational domain>."""
    for name in dict.fromkeys((domain, organization)):
        try:
            texts = await resolver.txt(f"_dmarc.{name}")
        except NoRecords:
            continue
        records = [record for text in texts if (record := parse_record(text)) is not None]
        if len(records) == 1:
            return records[0]
        if records:
            return None  # several records: as if there were none (6.6.3 step 4)
    return None


def _aligned(
    *,
    domain: str,
    organization: str,
    record: DmarcRecord,
    spf: SpfVerdict,
    dkim: Sequence[DkimVerdict],
    organizations: OrganizationalDomains,
) -> str:
    """How the message aligns ("" when it does not): a passing DKIM d= or a passing SPF domain."""

    def matches(other: str, strict: bool) -> bool:
        other = other.rstrip(".").lower()
        return other == domain if strict else organizations.of(other) == organization

    for verdict in dkim:
        if verdict.result == "pass" and matches(verdict.domain, record.strict_dkim):
            return f"DKIM aligned (d={verdict.domain})"
    if spf.identity == "mailfrom" and spf.result == "pass" and matches(spf.domain, record.strict_spf):
        return f"SPF aligned ({spf.domain})"
    return ""
