"""A worker's place among the server's processes (``workers`` > 1, or ``[delivery] own_process``): its number,
its role, the listening sockets the supervisor bound for it and its ends of the links to the delivery
process (links.py). Plain data, so that root.py and workers.py need not import each other."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Seat"]


@dataclass(frozen=True)
class Seat:
    """Worker ``index``; ``count`` SMTP workers in all; ``sockets`` maps a listener name ("smtp", ...) to its
    bound sockets. Worker 0 also serves the admin listener (one dashboard, one /metrics). ``generation``
    counts the times this seat's worker was started again after dying.

    ``role``: "smtp" takes mail (and delivers it too unless a delivery process runs); "delivery" is that
    process: no listener, the scheduler only, numbered after the SMTP workers. ``wake`` and ``events`` are
    this seat's ends of the links (links.py): an SMTP worker sends wakes and worker 0 reads events; the
    delivery process reads wakes and sends events. None without a delivery process. ``ready``: where the
    delivery process tells the supervisor it is up (one octet), so that the SMTP workers start after it
    (app/workers.py); None for the SMTP workers."""

    index: int
    count: int
    sockets: Mapping[str, Sequence[socket.socket]]
    generation: int = 0
    role: Literal["smtp", "delivery"] = "smtp"
    wake: socket.socket | None = None
    events: socket.socket | None = None
    ready: socket.socket | None = None

    @property
    def id_slot(self) -> int:
        """This worker's digit in queue ids (1..15; see queue/spool.py)."""
        return self.index + 1

    @property
    def serves_admin(self) -> bool:
        return self.index == 0 and self.role == "smtp"

    @property
    def listens(self) -> bool:
        return self.role == "smtp"

    @property
    def delivers(self) -> bool:
        """Runs the scheduler: the delivery process, or every worker when there is none."""
        return self.role == "delivery" or self.wake is None
