"""Connection caps shared by several worker processes: each counts against cap / workers, rounded up."""

from __future__ import annotations

import pytest

from postroom.server.limits import ConnectionLimits
from postroom.smtp import replies


def _fill(limits: ConnectionLimits, ip: str) -> int:
    """Acquire for ``ip`` until refused (at most 100 times); how many were allowed."""
    for allowed in range(100):
        if limits.acquire(ip) is not None:
            return allowed
    raise AssertionError("no cap reached in 100 connections")


def test_two_shares_halve_both_caps_rounding_up() -> None:
    limits = ConnectionLimits(max_total=5, max_per_ip=3, shares=2)
    assert limits.acquire("192.0.2.1") is None
    assert limits.acquire("192.0.2.1") is None
    assert limits.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_IP  # 3 / 2 -> 2 per IP
    assert limits.acquire("192.0.2.2") is None
    assert limits.acquire("192.0.2.3") == replies.TOO_MANY_CONNECTIONS  # 5 / 2 -> 3 in total
    assert limits.total == 3
    limits.release("192.0.2.1")
    assert limits.acquire("192.0.2.3") is None


def test_update_keeps_the_share() -> None:
    limits = ConnectionLimits(max_total=5, max_per_ip=3, shares=2)
    limits.update(max_total=8, max_per_ip=7)
    assert _fill(limits, "192.0.2.1") == 4  # 7 / 2 -> 4 per IP
    assert _fill(limits, "192.0.2.2") == 0  # 8 / 2 -> 4 in total, all taken


def test_update_keeps_counted_connections() -> None:
    limits = ConnectionLimits(max_total=10, max_per_ip=10, shares=2)
    assert _fill(limits, "192.0.2.1") == 5
    limits.update(max_total=4, max_per_ip=4)  # now 2 each: the 5 open ones stay, no new one
    assert limits.total == 5
    assert limits.acquire("192.0.2.2") == replies.TOO_MANY_CONNECTIONS


@pytest.mark.parametrize("shares", [1, 0, -3])
def test_one_share_or_fewer_is_the_whole_cap(shares: int) -> None:
    limits = ConnectionLimits(max_total=5, max_per_ip=3, shares=shares)
    assert _fill(limits, "192.0.2.1") == 3
    assert _fill(limits, "192.0.2.2") == 2
    assert limits.total == 5


def test_the_default_is_one_share() -> None:
    limits = ConnectionLimits(max_total=5, max_per_ip=3)
    assert _fill(limits, "192.0.2.1") == 3
    assert _fill(limits, "192.0.2.2") == 2


@pytest.mark.parametrize(("cap", "shares", "each"), [(1, 2, 1), (15, 15, 1), (16, 15, 2), (200, 3, 67)])
def test_shares_round_up_so_no_worker_gets_zero(cap: int, shares: int, each: int) -> None:
    limits = ConnectionLimits(max_total=cap, max_per_ip=cap, shares=shares)
    assert _fill(limits, "192.0.2.1") == each
