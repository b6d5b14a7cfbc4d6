"""May this IP connect? Allow and deny lists of addresses and CIDR ranges (IPv4 and IPv6), global and per
listener, from the config and from files that are read again on SIGHUP.

The most specific entry wins (the longest prefix, as in a routing table), so "deny 10.0.0.0/8" with
"allow 10.1.2.3" lets 10.1.2.3 in, and "allow 10.0.0.0/8" with "deny 10.6.6.6" keeps 10.6.6.6 out; between an
allow and a deny entry of the same length, deny wins. This module decides; it does not touch sockets, and the
DNSBL lives in dnsbl.py.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from postroom.config.schema import PolicySettings

__all__ = ["Access", "AccessLists", "ListFileError", "read_list_file"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Access(enum.Enum):
    """What the lists say about one client address."""

    ALLOW = "allow"  # listed as allowed: no DNSBL, no greet delay (connection limits still count)
    DENY = "deny"  # refused with 554 5.7.1 at connect
    NEUTRAL = "neutral"  # on no list: the other checks decide


class ListFileError(Exception):
    """An allow or deny file that cannot be read or has a line that is not an address or network."""


def read_list_file(path: Path) -> list[_Network]:
    """The networks in ``path``: one address or CIDR per line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ListFileError(f"{path}: cannot read the list ({exc})") from exc
    networks: list[_Network] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ListFileError(f"{path}:{number}: {entry!r} is not an IP address or network") from None
    return networks


class _PrefixTable:
    """Longest-prefix match: for each prefix length in use, the set of network numbers with that length."""

    def __init__(self, entries: Iterable[tuple[_Network, Access]]) -> None:
        tables: dict[tuple[int, int], dict[int, Access]] = {}
        for network, access in entries:
            table = tables.setdefault((network.version, network.prefixlen), {})
            key = int(network.network_address)
            if table.get(key) is not Access.DENY:  # same network on both lists: deny wins
                table[key] = access
        # Longest prefixes first, so the first hit is the most specific entry.
        self._tables = sorted(tables.items(), key=lambda item: -item[0][1])

    def lookup(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Access:
        number, bits = int(address), address.max_prefixlen
        for (version, prefixlen), table in self._tables:
            if version != address.version:
                continue
            mask = ((1 << prefixlen) - 1) << (bits - prefixlen)
            found = table.get(number & mask)
            if found is not None:
                return found
        return Access.NEUTRAL


class AccessLists:
    """The allow and deny lists of every listener. ``reload()`` reads the list files again."""

    def __init__(self, *, settings: PolicySettings, base_dir: Path, listeners: Iterable[str]) -> None:
        """``base_dir`` resolves relative list file paths (the data folder). Raises ListFileError."""
        self._settings = settings
        self._base_dir = base_dir
        self._listeners = tuple(listeners)
        self._tables: dict[str, _PrefixTable] = {}
        self.reload()

    def _file(self, path: Path | None) -> list[_Network]:
        return [] if path is None else read_list_file(path if path.is_absolute() else self._base_dir / path)

    def reload(self) -> None:
        """Read the list files again; on an error the lists in use stay as they were (and it is raised)."""
        settings = self._settings
        allow = [*settings.allow, *self._file(settings.allow_file)]
        deny = [*settings.deny, *self._file(settings.deny_file)]
        tables = {}
        for name in self._listeners:
            own = settings.listener(name)
            entries = [(net, Access.ALLOW) for net in (*allow, *own.allow)]
            entries += [(net, Access.DENY) for net in (*deny, *own.deny)]
            tables[name] = _PrefixTable(entries)
        self._tables = tables

    @property
    def files(self) -> tuple[Path, ...]:
        """The list files in use (for the reload log line)."""
        return tuple(path for path in (self._settings.allow_file, self._settings.deny_file) if path)

    def check(self, ip: str, listener: str) -> Access:
        """What the lists of ``listener`` say about ``ip`` (an address that does not parse is NEUTRAL)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return Access.NEUTRAL
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket is 192.0.2.1
        table = self._tables.get(listener)
        return Access.NEUTRAL if table is None else table.lookup(address)
