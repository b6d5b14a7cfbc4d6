"""DNS block and allow lists (RFC 5782): is a client address listed in a DNSBL or a DNSWL zone?

The name asked is the address reversed under the zone: octets for IPv4 (1.2.3.4 -> 4.3.2.1.zone), nibbles
for IPv6. An A record in 127.0.0.0/8 means "listed", except 127.255.255.0/24, which Spamhaus and others use
for "your query was refused" (a resolver without an account): that is logged, not obeyed. A DNSWL hit means
the DNSBL zones are not asked at all. Lookups that fail or run out of time count as "not listed" with a log
line (fail open: a broken list must not stop the mail). Answers are cached for a while.

This module answers "listed where?"; it does not choose the reply or the moment of refusal (the gate and
the session do).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from postroom.dns import DnsError, NoRecords
from postroom.observe.log import Logger

__all__ = ["AddressLookup", "DnsblChecker", "Listing", "query_name"]

_CACHE_ENTRIES = 50_000  # bound on memory: about 100 bytes each
_LISTED = ipaddress.ip_network("127.0.0.0/8")
_ERROR_CODES = ipaddress.ip_network("127.255.255.0/24")


class AddressLookup(Protocol):
    """What this module needs from DNS (postroom.dns.DnsResolver has it)."""

    async def ipv4(self, name: str) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Listing:
    """Where a client was found: the first DNSWL zone, or the first DNSBL zone (None: not listed)."""

    allowed_by: str | None = None
    blocked_by: str | None = None


def query_name(ip: str, zone: str) -> str:
    """The name to ask for ``ip`` under ``zone`` (RFC 5782 2.1 and 2.4). Raises ValueError for a non-IP."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join([*labels, zone.rstrip(".")])


class DnsblChecker:
    """Asks the configured zones about one client address at a time; keeps answers ``cache_seconds``."""

    def __init__(
        self,
        *,
        resolver: AddressLookup,
        blocklists: Sequence[str],
        allowlists: Sequence[str] = (),
        timeout: float,
        cache_seconds: float,
        clock: Callable[[], float],
        log: Logger,
    ) -> None:
        self._resolver = resolver
        self._blocklists = tuple(blocklists)
        self._allowlists = tuple(allowlists)
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._log = log
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    @property
    def active(self) -> bool:
        """Some zone is configured (with none, checking is a no-op)."""
        return bool(self._blocklists or self._allowlists)

    async def check(self, ip: str) -> Listing:
        """DNSWL zones first (a hit ends it), then the DNSBL zones; all within the timeout."""
        try:
            async with asyncio.timeout(self._timeout):
                allowed = await self._first_listed(ip, self._allowlists)
                if allowed is not None:
                    return Listing(allowed_by=allowed)
                return Listing(blocked_by=await self._first_listed(ip, self._blocklists))
        except TimeoutError:
            self._log.warning("dnsbl.timeout", client=ip, seconds=self._timeout)
            return Listing()

    async def _first_listed(self, ip: str, zones: tuple[str, ...]) -> str | None:
        """The first of ``zones`` (in configured order) that lists ``ip``; all are asked at once."""
        if not zones:
            return None
        found = await asyncio.gather(*(self._listed(ip, zone) for zone in zones))
        return next((zone for zone, listed in zip(zones, found, strict=True) if listed), None)

    async def _listed(self, ip: str, zone: str) -> bool:
        now = self._clock()
        cached = self._cache.get((zone, ip))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            name = query_name(ip, zone)
        except ValueError:
            return False  # not an IP address (a Unix socket): nothing to look up
        try:
            answers = await self._resolver.ipv4(name)
        except NoRecords:
            listed = False  # NXDOMAIN (or NODATA): not listed, the usual answer
        except DnsError as exc:
            self._log.warning("dnsbl.error", client=ip, zone=zone, error=str(exc))
            return False  # not cached: ask again next time
        else:
            listed = self._interpret(ip, zone, answers)
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache = {key: value for key, value in self._cache.items() if value[0] > now}
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
        self._cache[(zone, ip)] = (now + self._cache_seconds, listed)
        return listed

    def _interpret(self, ip: str, zone: str, answers: list[str]) -> bool:
        codes = [ipaddress.IPv4Address(answer) for answer in answers]
        if any(code in _ERROR_CODES for code in codes):
            self._log.warning("dnsbl.refused_query", client=ip, zone=zone, answer=" ".join(answers))
            return False
        if not all(code in _LISTED for code in codes):
            # Outside 127/8: a resolver that rewrites NXDOMAIN, or a zone that no longer exists.
            self._log.warning("dnsbl.bad_answer", client=ip, zone=zone, answer=" ".join(answers))
            return False
        return bool(codes)
