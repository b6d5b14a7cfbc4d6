"""A worker's place among the server's processes (``workers`` > 1): its number and the listening sockets
the supervisor bound for it. Plain data, so that root.py and workers.py need not import each other."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Seat"]


@dataclass(frozen=True)
class Seat:
    """Worker ``index`` of ``count``; ``sockets`` maps a listener name ("smtp", ...) to its bound sockets.
    Worker 0 also serves the admin listener (one dashboard, one /metrics). ``generation`` counts the
    times this seat's worker was started again after dying."""

    index: int
    count: int
    sockets: Mapping[str, Sequence[socket.socket]]
    generation: int = 0

    @property
    def id_slot(self) -> int:
        """This worker's digit in queue ids (1..15; see queue/spool.py)."""
        return self.index + 1

    @property
    def serves_admin(self) -> bool:
        return self.index == 0
