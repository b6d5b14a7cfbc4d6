"""Greylisting: the first mail of a (client network, sender, recipient) triplet is deferred with 451 4.7.1;
a retry after ``delay`` passes and the triplet is remembered. Real MTAs retry; most spam bots do not.

Decisions only: entries are read through a ``lookup`` callable and changed entries wait here (pending)
until the caller writes them (``limitstore.py``); losing them in a crash only means one more deferral.
Time is an argument. Who is exempt (authenticated users, relay networks) is the caller's call.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace

from postroom.config.schema import GreylistSettings

__all__ = ["GreyEntry", "Greylist", "client_network", "triplet"]

# A passed triplet's last use is written again only when it is older than this: one write per triplet per
# hour at most, instead of one per message. Its 36-day lifetime does not need a finer clock.
_REFRESH = 3600.0


@dataclass(frozen=True, slots=True)
class GreyEntry:
    """One triplet: when it was first and last seen, and whether a retry has passed it."""

    first_seen: float
    last_seen: float
    passed: bool


def client_network(ip: str) -> str:
    """The client's /24 (IPv4) or /64 (IPv6): a sending farm retries from a neighbouring address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def triplet(ip: str, sender: str, recipient: str) -> str:
    return f"{client_network(ip)} {sender.lower()} {recipient.lower()}"


class Greylist:
    """``check`` says how many seconds the client must still wait (0.0 = accept)."""

    def __init__(self, *, settings: GreylistSettings, lookup: Callable[[str], GreyEntry | None]) -> None:
        self._lookup = lookup
        self._pending: dict[str, GreyEntry] = {}
        self._in_flight: dict[str, GreyEntry] = {}
        self.update(settings)

    def update(self, settings: GreylistSettings) -> None:
        """New delays and allow lists (a config reload); the triplets seen so far are kept."""
        self._settings = settings
        self._networks = settings.allow_networks
        self._domains = frozenset(domain.lower().rstrip(".") for domain in settings.allow_domains)

    def allowed(self, *, ip: str, recipient_domain: str) -> bool:
        """On the allow list: the client's network or the recipient's domain."""
        if recipient_domain.lower().rstrip(".") in self._domains:
            return True
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def check(self, *, ip: str, sender: str, recipient: str, now: float) -> float:
        key = triplet(ip, sender, recipient)
        entry = self._find(key)
        settings = self._settings
        if entry is not None and entry.passed and now - entry.last_seen <= settings.confirmed_ttl:
            if now - entry.last_seen > _REFRESH:
                self._pending[key] = replace(entry, last_seen=now)
            return 0.0
        if entry is None or entry.passed or now - entry.first_seen > settings.unconfirmed_ttl:
            self._pending[key] = GreyEntry(first_seen=now, last_seen=now, passed=False)  # new, or expired
            return settings.delay
        wait = entry.first_seen + settings.delay - now
        if wait > 0:
            self._pending[key] = replace(entry, last_seen=now)
            return wait
        self._pending[key] = replace(entry, last_seen=now, passed=True)
        return 0.0

    def _find(self, key: str) -> GreyEntry | None:
        entry = self._pending.get(key) or self._in_flight.get(key)
        return entry if entry is not None else self._lookup(key)

    # --- writing behind ---------------------------------------------------------------------------------

    def take_batch(self) -> dict[str, GreyEntry]:
        """Changed entries to write (now in flight until ``written`` or ``write_failed``)."""
        self._in_flight.update(self._pending)
        batch, self._pending = self._pending, {}
        return batch

    def written(self, batch: dict[str, GreyEntry]) -> None:
        for key, entry in batch.items():
            if self._in_flight.get(key) is entry:
                del self._in_flight[key]

    def write_failed(self, batch: dict[str, GreyEntry]) -> None:
        for key, entry in batch.items():
            self._pending.setdefault(key, entry)
            if self._in_flight.get(key) is entry:
                del self._in_flight[key]
