"""Allow and deny lists: longest prefix wins, IPv4 and IPv6, per listener, files read again on reload."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest

from postroom.config import ConfigError, parse_config
from postroom.config.schema import ListenerPolicy, PolicySettings
from postroom.policy.connect import Access, AccessLists, ListFileError, read_list_file

LISTENERS = ("smtp", "submission", "submissions")


def _nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


def _lists(tmp_path: Path, **settings: Any) -> AccessLists:
    return AccessLists(settings=PolicySettings(**settings), base_dir=tmp_path, listeners=LISTENERS)


def test_the_most_specific_entry_wins_both_ways(tmp_path: Path) -> None:
    lists = _lists(
        tmp_path,
        allow=_nets("10.1.2.3/32", "172.16.0.0/12"),
        deny=_nets("10.0.0.0/8", "172.16.6.6/32"),
    )
    assert lists.check("10.1.2.3", "smtp") is Access.ALLOW
    assert lists.check("10.1.2.4", "smtp") is Access.DENY
    assert lists.check("172.20.0.1", "smtp") is Access.ALLOW
    assert lists.check("172.16.6.6", "smtp") is Access.DENY
    assert lists.check("192.0.2.1", "smtp") is Access.NEUTRAL


def test_deny_wins_a_tie(tmp_path: Path) -> None:
    lists = _lists(tmp_path, allow=_nets("192.0.2.0/24"), deny=_nets("192.0.2.0/24"))
    assert lists.check("192.0.2.9", "smtp") is Access.DENY


def test_ipv6_ranges_and_ipv4_mapped_addresses(tmp_path: Path) -> None:
    lists = _lists(tmp_path, deny=_nets("2001:db8::/32", "198.51.100.0/24"), allow=_nets("2001:db8:1::/48"))
    assert lists.check("2001:db8:2::1", "smtp") is Access.DENY
    assert lists.check("2001:db8:1::1", "smtp") is Access.ALLOW
    assert lists.check("2001:db9::1", "smtp") is Access.NEUTRAL
    assert lists.check("::ffff:198.51.100.7", "smtp") is Access.DENY  # dual-stack socket
    assert lists.check("not an address", "smtp") is Access.NEUTRAL


def test_listener_entries_add_to_the_global_ones(tmp_path: Path) -> None:
    lists = _lists(
        tmp_path,
        deny=_nets("203.0.113.0/24"),
        smtp=ListenerPolicy(deny=_nets("192.0.2.0/24")),
        submission=ListenerPolicy(allow=_nets("203.0.113.5/32")),
    )
    assert lists.check("192.0.2.1", "smtp") is Access.DENY
    assert lists.check("192.0.2.1", "submission") is Access.NEUTRAL
    assert lists.check("203.0.113.5", "smtp") is Access.DENY
    assert lists.check("203.0.113.5", "submission") is Access.ALLOW
    assert lists.check("192.0.2.1", "unknown listener") is Access.NEUTRAL


def test_list_files_and_reload(tmp_path: Path) -> None:
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text("# spammers\n192.0.2.0/24  # a whole range\n\n2001:db8::1\n")
    lists = _lists(tmp_path, deny_file=Path("deny.txt"))  # relative to the data folder
    assert lists.check("192.0.2.200", "smtp") is Access.DENY
    assert lists.check("2001:db8::1", "smtp") is Access.DENY
    assert lists.files == (Path("deny.txt"),)

    deny_file.write_text("198.51.100.1\n")
    lists.reload()
    assert lists.check("192.0.2.200", "smtp") is Access.NEUTRAL
    assert lists.check("198.51.100.1", "smtp") is Access.DENY

    deny_file.write_text("198.51.100.2\nnonsense\n")
    with pytest.raises(ListFileError, match=r"deny.txt:2: 'nonsense'"):
        lists.reload()
    assert lists.check("198.51.100.1", "smtp") is Access.DENY  # the lists in use stay


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ListFileError, match=r"allow\.txt"):
        read_list_file(tmp_path / "allow.txt")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"deny": ["10.0.0.300"]}, "policy.deny: '10.0.0.300' is not an IP network"),
        ({"dnsbl": ["zen spamhaus"]}, "policy.dnsbl[0]: 'zen spamhaus' is not a DNS zone name"),
        ({"dnsbl_listeners": ["mx"]}, "policy.dnsbl_listeners[0]: 'mx' is not one of"),
        ({"dnsbl_reject": "data"}, "policy.dnsbl_reject: expected one of"),
        ({"dnsbl_timeout": 0}, "policy.dnsbl_timeout: must be greater than 0"),
        ({"smtp": {"greet_delay": -1}}, "policy.smtp.greet_delay: must be 0"),
        ({"smtp": {"proxy_protocol": True}}, "policy.smtp.trusted_proxies: proxy_protocol needs"),
        (
            {"submissions": {"proxy_protocol": True, "trusted_proxies": ["10.0.0.1"]}},
            "policy.submissions.proxy_protocol: not supported with implicit TLS",
        ),
        ({"smtp": {"greet": 1}}, "policy.smtp.greet: unknown key"),
    ],
)
def test_policy_config_errors_name_the_key(policy: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"policy": policy})


def test_policy_config_parses_cidrs_and_listener_tables() -> None:
    config = parse_config(
        {"policy": {"allow": "192.0.2.1", "smtp": {"greet_delay": 2, "deny": ["2001:db8::/32"]}}}
    )
    assert config.policy.allow == _nets("192.0.2.1/32")
    assert config.policy.smtp == ListenerPolicy(greet_delay=2.0, deny=_nets("2001:db8::/32"))
    assert config.policy.submission == ListenerPolicy()
