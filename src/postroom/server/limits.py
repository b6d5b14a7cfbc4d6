"""Concurrent-connection caps, in total and per client IP. Pure bookkeeping; the listener asks it."""

from __future__ import annotations

from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["ConnectionLimits"]


class ConnectionLimits:
    """Counts open connections; ``acquire`` says no (with the reply to send) beyond the caps.

    With ``shares`` worker processes, each counts its own connections against its share of each cap
    (cap / shares, rounded up; at least 1): together they hold about the configured number.
    The kernel spreads connections over the workers' sockets (app/workers.py), so a client can meet
    its share in one worker a little before the whole cap.
    """

    def __init__(self, *, max_total: int, max_per_ip: int, shares: int = 1) -> None:
        self._shares = max(1, shares)
        self._max_total = self._max_per_ip = 0
        self.update(max_total=max_total, max_per_ip=max_per_ip)
        self._total = 0
        self._per_ip: dict[str, int] = {}

    def update(self, *, max_total: int, max_per_ip: int) -> None:
        """New caps (a config reload); connections already counted stay counted, none is closed."""
        self._max_total = -(-max_total // self._shares)
        self._max_per_ip = -(-max_per_ip // self._shares)

    @property
    def total(self) -> int:
        return self._total

    def acquire(self, ip: str) -> Reply | None:
        """Count a new connection from ``ip``; returns None when allowed, else the 421 to send."""
        if self._total >= self._max_total:
            return replies.TOO_MANY_CONNECTIONS
        count = self._per_ip.get(ip, 0)
        if count >= self._max_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        self._total += 1
        self._per_ip[ip] = count + 1
        return None

    def release(self, ip: str) -> None:
        count = self._per_ip.get(ip, 0)
        if count <= 0:
            raise RuntimeError(f"release without acquire for {ip}")
        self._total -= 1
        if count == 1:
            del self._per_ip[ip]
        else:
            self._per_ip[ip] = count - 1
