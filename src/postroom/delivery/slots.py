"""Outbound connection slots: a cap on connections in total and one per destination domain, both changeable
while in use (a SIGHUP). Counts and waits on the event loop; knows nothing of SMTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    """``slot(domain)`` waits until fewer than ``total`` slots are taken, and fewer than ``per_domain`` for
    that domain; waiters are let in first come, first served as slots free up or the caps grow. Lowering a
    cap closes nothing: slots already taken stay until given back."""

    def __init__(self, *, total: int, per_domain: int) -> None:
        self._total = max(1, total)
        self._per_domain = max(1, per_domain)
        self._taken = 0
        self._by_domain: dict[str, int] = {}
        self._waiters: list[asyncio.Future[None]] = []

    def update(self, *, total: int, per_domain: int) -> None:
        """New caps, for the slots taken from now on."""
        self._total, self._per_domain = max(1, total), max(1, per_domain)
        self._wake()

    @property
    def taken(self) -> int:
        return self._taken

    def _free(self, domain: str) -> bool:
        return self._taken < self._total and self._by_domain.get(domain, 0) < self._per_domain

    def _wake(self) -> None:
        """Every waiter looks again (in the order they came); those that still do not fit wait again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        while not self._free(domain):
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            await waiter
        self._taken += 1
        self._by_domain[domain] = self._by_domain.get(domain, 0) + 1
        try:
            yield
        finally:
            self._taken -= 1
            left = self._by_domain[domain] - 1
            if left:
                self._by_domain[domain] = left
            else:
                del self._by_domain[domain]
            self._wake()
