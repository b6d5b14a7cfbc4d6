"""What the dashboard shows of recent activity, gathered from the structured log events (a Logger listener):
the last deliveries and refusals, and a short history of throughput and queue size sampled at intervals.

Bounded in memory (fixed-size rings); thread-safe (records arrive from the loop and from worker threads).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Activity", "Sample"]

_DELIVERY_EVENTS = {
    "delivery.delivered": "delivered",
    "delivery.deferred": "deferred",
    "delivery.failed": "bounced",
}
_REFUSAL_EVENTS = ("smtp.rejected", "message.refused", "session.refused")


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the charts: messages received and delivery results since the previous sample."""

    ts: float
    received: int
    delivered: int
    deferred: int
    bounced: int
    queue: int


class Activity:
    """Recent deliveries and refusals, and the chart history."""

    def __init__(self, *, clock: Callable[[], float], keep: int = 100, history: int = 180) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._deliveries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._refusals: deque[dict[str, Any]] = deque(maxlen=keep)
        self._samples: deque[Sample] = deque(maxlen=history)
        self._counts = {"received": 0, "delivered": 0, "deferred": 0, "bounced": 0}

    def observe(self, record: dict[str, Any]) -> None:
        """A Logger listener."""
        event = str(record.get("event", ""))
        if event == "message.queued":
            with self._lock:
                self._counts["received"] += 1
        elif event in _DELIVERY_EVENTS:
            result = _DELIVERY_EVENTS[event]
            entry = {
                "ts": record.get("ts"),
                "queue_id": record.get("queue_id", ""),
                "rcpt": record.get("rcpt", ""),
                "result": result,
                "transport": record.get("transport", ""),
                "attempts": record.get("attempts", 0),
                "error": record.get("error", ""),
            }
            with self._lock:
                self._counts[result] += 1
                self._deliveries.appendleft(entry)
        elif event in _REFUSAL_EVENTS:
            entry = {
                "ts": record.get("ts"),
                "event": event,
                "session_id": record.get("session_id", ""),
                "client": record.get("client", ""),
                "command": record.get("command", ""),
                "argument": record.get("argument", ""),
                "reply": record.get("reply", ""),
                "reason": record.get("reason", ""),
            }
            with self._lock:
                self._refusals.appendleft(entry)

    def sample(self, queue_size: int) -> Sample:
        """Close the current interval: its counts and the queue size now become one chart point."""
        with self._lock:
            point = Sample(ts=self._clock(), queue=queue_size, **self._counts)
            self._counts = dict.fromkeys(self._counts, 0)
            self._samples.append(point)
        return point

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._deliveries)

    def refusals(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._refusals)

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(point) for point in self._samples]
