"""Connection caps in total and per IP."""

from __future__ import annotations

import pytest

from postroom.server.limits import ConnectionLimits
from postroom.smtp import replies


def test_per_ip_cap_refuses_that_ip_only() -> None:
    limits = ConnectionLimits(max_total=10, max_per_ip=2)
    assert limits.acquire("192.0.2.1") is None
    assert limits.acquire("192.0.2.1") is None
    assert limits.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_IP
    assert limits.acquire("192.0.2.2") is None
    limits.release("192.0.2.1")
    assert limits.acquire("192.0.2.1") is None


def test_total_cap() -> None:
    limits = ConnectionLimits(max_total=2, max_per_ip=5)
    assert limits.acquire("192.0.2.1") is None
    assert limits.acquire("192.0.2.2") is None
    assert limits.acquire("192.0.2.3") == replies.TOO_MANY_CONNECTIONS
    assert limits.total == 2


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        ConnectionLimits(max_total=1, max_per_ip=1).release("192.0.2.9")


def test_new_caps_from_a_reload_count_the_open_connections() -> None:
    limits = ConnectionLimits(max_total=10, max_per_ip=5)
    for _ in range(3):
        assert limits.acquire("192.0.2.1") is None
    limits.update(max_total=10, max_per_ip=2)
    assert limits.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_IP
    limits.release("192.0.2.1")  # the open ones close normally
    limits.release("192.0.2.1")
    assert limits.acquire("192.0.2.1") is None
