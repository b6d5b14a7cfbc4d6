"""Which hosts receive mail for a domain, in the order to try them (RFC 5321 5.1, RFC 7505 null MX).

Theory of operation: ``mail_hosts`` asks for the domain's MX records and hands them to the pure
``order_mx``: lowest preference first, equal preferences shuffled (the rng is passed in, so tests are
deterministic), the hosts at or above our own preference dropped (5.1: never relay to an equal or worse MX of
our own). With no MX records but an address, the domain itself is the one implicit MX. An MX "." alone is a
null MX: the domain takes no mail, a permanent failure. ``host_addresses`` then resolves the hosts one at a
time, as delivery tries them. Domain literals ("[192.0.2.1]") are the caller's business; never seen here.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Collection, Iterable
from dataclasses import dataclass

from postroom.dns.resolver import DnsError, MxRecord, NoRecords, Resolver, ascii_name

__all__ = [
    "HostAddresses",
    "MailHost",
    "MxLoop",
    "NullMx",
    "host_addresses",
    "mail_hosts",
    "order_mx",
    "resolve_host",
]


class NullMx(DnsError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail. Permanent; bounce with 5.1.10."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, "MX", "the domain accepts no mail (null MX, RFC 7505)")


class MxLoop(DnsError):
    """We are the best MX for a domain we do not keep mail for (RFC 5321 5.1): a configuration error."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, "MX", "mail for this domain loops back to this server (we are its best MX)")


@dataclass(frozen=True, slots=True)
class MailHost:
    """A host to try: its name (a lower-case A-label), its MX preference, and whether it is an implicit MX."""

    name: str
    preference: int
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """A host's addresses in the order to try them, or the lookup error that left it with none."""

    host: MailHost
    addresses: tuple[str, ...]
    error: DnsError | None = None


def order_mx(
    domain: str, records: Iterable[MxRecord], *, rng: random.Random, local_names: Collection[str] = ()
) -> list[MailHost]:
    """The hosts to try for ``domain``, best first; raises NullMx, or MxLoop when we are the best MX.

    ``local_names`` are this server's own host names; their records and every worse one are dropped.
    An empty list in means an empty list out (the caller decides about implicit MX).
    """
    records = list(records)
    usable = [record for record in records if record.exchange != "."]
    if records and not usable:
        # RFC 7505 3: MX "." says the domain takes no mail. Mixed with real MX records it is merely unusable.
        raise NullMx(domain)
    best: dict[str, int] = {}
    for record in usable:
        name = _host_name(record.exchange)
        best[name] = min(record.preference, best.get(name, record.preference))
    own = {_host_name(name) for name in local_names}
    own_preferences = [preference for name, preference in best.items() if name in own]
    if own_preferences:
        # RFC 5321 5.1: discard our own entry and every entry with a preference equal to or worse than ours.
        cutoff = min(own_preferences)
        best = {name: preference for name, preference in best.items() if preference < cutoff}
        if not best:
            raise MxLoop(domain)
    by_preference: dict[int, list[str]] = {}
    for name, preference in sorted(best.items()):
        by_preference.setdefault(preference, []).append(name)
    hosts: list[MailHost] = []
    for preference in sorted(by_preference):
        # RFC 5321 5.1: hosts of equal preference are tried in random order, to spread the load.
        names = by_preference[preference]
        rng.shuffle(names)
        hosts.extend(MailHost(name, preference) for name in names)
    return hosts


def _host_name(name: str) -> str:
    return name.lower().rstrip(".")


async def mail_hosts(
    resolver: Resolver, domain: str, *, rng: random.Random, local_names: Collection[str] = ()
) -> list[MailHost]:
    """The hosts that take mail for ``domain``, best first; never empty.

    Raises NoRecords (no MX and no address: permanent), TemporaryDnsError, NullMx or MxLoop.
    """
    try:
        records = await resolver.mx(domain)
    except NoRecords as error:
        if error.nxdomain:
            raise
        records = []
    if not records:
        # RFC 5321 5.1: no MX records -> the domain itself is the implicit MX at preference 0, if it has an
        # address. Asking here turns "no MX and no address" into one clear NoRecords for the caller.
        await resolver.addresses(domain)
        return [MailHost(ascii_name(domain), 0, implicit=True)]
    return order_mx(domain, records, rng=rng, local_names=local_names)


async def resolve_host(resolver: Resolver, host: MailHost) -> HostAddresses:
    """One host's addresses (IPv4 first, then IPv6), or the DnsError that left it none; never raises it."""
    try:
        addresses = await resolver.addresses(host.name)
    except DnsError as error:
        return HostAddresses(host, (), error)
    return HostAddresses(host, tuple(addresses))


async def host_addresses(
    resolver: Resolver, hosts: Iterable[MailHost]
) -> AsyncGenerator[HostAddresses, None]:
    """Each host's addresses in turn, resolved only when asked for: a backup MX is looked up only if needed.

    RFC 5321 5.1: a host whose addresses cannot be found is skipped; if every host fails, the delivery fails,
    temporarily if any ``error`` was temporary. Close it early with ``contextlib.aclosing``.
    """
    for host in hosts:
        yield await resolve_host(resolver, host)
