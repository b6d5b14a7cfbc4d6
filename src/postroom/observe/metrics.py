"""Prometheus metrics, derived from the structured log events (a Logger listener) plus the queue's state read
at scrape time. One CollectorRegistry per Metrics object: no global registry, so several Apps (tests) coexist.

It does not serve HTTP (postroom.admin does) and carries no addresses: labels are low-cardinality names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["CONTENT_TYPE", "Metrics", "QueueStats", "reply_reason"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds from "queued" to "delivered": local mail takes milliseconds, remote mail seconds to days (retries).
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The queue at one moment: messages waiting and the age of the oldest (0 when empty)."""

    messages: int
    oldest_age: float


def _catalogue() -> dict[str, str]:
    """Reply text ("554 5.7.1 Relay access denied") -> its catalogue name in lower case ("relay_denied")."""
    names: dict[str, str] = {}
    for name, value in vars(replies).items():
        if isinstance(value, Reply) and name.isupper():
            names.setdefault(str(value), name.lower())
    return names


def reply_reason(reply_text: str, catalogue: Mapping[str, str]) -> str:
    """A bounded label for a refusal: the reply's catalogue name, else its enhanced status, else "other"."""
    name = catalogue.get(reply_text)
    if name is not None:
        return name
    parts = reply_text.split(" ", 2)
    if len(parts) >= 2 and parts[1].count(".") == 2 and parts[1].replace(".", "").isdigit():
        return f"status_{parts[1].replace('.', '_')}"
    return "other"


class _QueueCollector(Collector):
    """Queue size and the oldest message's age, asked of the queue when Prometheus scrapes."""

    def __init__(self, source: Callable[[], QueueStats | None]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        stats = self._source()
        if stats is None:
            return
        yield GaugeMetricFamily("postroom_queue_messages", "Messages in the queue.", value=stats.messages)
        yield GaugeMetricFamily(
            "postroom_queue_oldest_message_age_seconds",
            "Age of the oldest message in the queue (0 when empty).",
            value=stats.oldest_age,
        )


class Metrics:
    """Counters fed by ``observe(record)`` (hand it to ``Logger.add_listener``); ``render()`` for /metrics.

    Thread-safe: log records arrive from the event loop and from delivery and password-check threads.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._catalogue = _catalogue()
        self._queue_source: Callable[[], QueueStats | None] = lambda: None
        self.registry.register(_QueueCollector(self._read_queue))
        r = self.registry
        self.connections_current = Gauge(
            "postroom_connections_current", "Open SMTP connections.", ["listener"], registry=r
        )
        self.connections = Counter(
            "postroom_connections_total", "SMTP connections by listener and result.", ["listener", "result"],
            registry=r,
        )
        self.messages_received = Counter(
            "postroom_messages_received_total", "Messages accepted into the queue.", registry=r
        )
        self.message_bytes = Counter(
            "postroom_messages_received_bytes_total", "Size of the messages accepted into the queue.",
            registry=r,
        )
        self.messages_refused = Counter(
            "postroom_messages_refused_total", "Messages refused at the end of data, by reason.", ["reason"],
            registry=r,
        )
        self.recipients_accepted = Counter(
            "postroom_recipients_accepted_total", "Recipients of messages accepted into the queue.",
            registry=r,
        )
        self.recipients_refused = Counter(
            "postroom_recipients_refused_total", "RCPT commands refused, by reason.", ["reason"], registry=r
        )
        self.commands_refused = Counter(
            "postroom_commands_refused_total", "SMTP commands refused, by command and reason.",
            ["command", "reason"], registry=r,
        )
        self.deliveries = Counter(
            "postroom_deliveries_total", "Delivery attempts by result and destination type.",
            ["result", "destination"], registry=r,
        )
        self.delivery_latency = Histogram(
            "postroom_delivery_latency_seconds", "Seconds from queued to delivered.", ["destination"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.bounces = Counter("postroom_bounces_total", "Delivery status notifications sent.", registry=r)
        self.tls_inbound = Counter(
            "postroom_tls_inbound_total", "STARTTLS handshakes with clients, by result and TLS version.",
            ["result", "version"], registry=r,
        )
        self.tls_outbound = Counter(
            "postroom_delivery_transactions_total", "Outbound SMTP transactions, by whether TLS was used.",
            ["tls"], registry=r,
        )
        self.auth_failures = Counter(
            "postroom_auth_failures_total", "Failed SMTP AUTH attempts, by reason.", ["reason"], registry=r
        )
        self.rate_limit_hits = Counter(
            "postroom_rate_limit_hits_total", "Requests refused or delayed by a rate limit.", ["limit"],
            registry=r,
        )
        self.bytes_in = Counter(
            "postroom_smtp_received_bytes_total", "Bytes received from SMTP clients (counted at close).",
            ["listener"], registry=r,
        )
        self.bytes_out = Counter(
            "postroom_smtp_sent_bytes_total", "Bytes sent to SMTP clients (counted at close).", ["listener"],
            registry=r,
        )
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "session.connect": self._on_connect,
            "session.refused": self._on_refused_connection,
            "session.close": self._on_close,
            "message.queued": self._on_queued,
            "message.refused": self._on_message_refused,
            "smtp.rejected": self._on_rejected,
            "delivery.delivered": lambda record: self._on_delivery(record, "delivered"),
            "delivery.deferred": lambda record: self._on_delivery(record, "deferred"),
            "delivery.failed": lambda record: self._on_delivery(record, "bounced"),
            "delivery.bounced": lambda record: self.bounces.inc(),
            "delivery.transaction": self._on_transaction,
            "tls.started": lambda record: self.tls_inbound.labels("ok", str(record.get("version", ""))).inc(),
            "tls.failed": lambda record: self.tls_inbound.labels("failed", "").inc(),
            "auth.failed": lambda record: self.auth_failures.labels("bad_credentials").inc(),
            "auth.throttled": lambda record: self.auth_failures.labels("throttled").inc(),
        }

    def watch_queue(self, source: Callable[[], QueueStats | None]) -> None:
        """Where scrapes read the queue's size and oldest age (None: leave them out)."""
        self._queue_source = source

    def _read_queue(self) -> QueueStats | None:
        return self._queue_source()

    def render(self) -> bytes:
        """The Prometheus text exposition of everything."""
        return generate_latest(self.registry)

    def observe(self, record: dict[str, Any]) -> None:
        """A Logger listener: turns one structured log record into counter updates."""
        event = str(record.get("event", ""))
        handler = self._handlers.get(event)
        if handler is not None:
            handler(record)
        if event.startswith("ratelimit.") or event.endswith(".rate_limited"):
            self.rate_limit_hits.labels(str(record.get("limit") or event)).inc()

    # --- sessions ---------------------------------------------------------------------------------------

    def _on_connect(self, record: dict[str, Any]) -> None:
        listener = str(record.get("listener", ""))
        self.connections.labels(listener, "accepted").inc()
        self.connections_current.labels(listener).inc()

    def _on_refused_connection(self, record: dict[str, Any]) -> None:
        self.connections.labels(str(record.get("listener", "")), "refused").inc()
        name = self._catalogue.get(str(record.get("reply", "")), "")
        if name.startswith("too_many_connections") or "rate" in name.split("_"):  # connection limits
            self.rate_limit_hits.labels(name).inc()

    def _on_close(self, record: dict[str, Any]) -> None:
        listener = str(record.get("listener", ""))
        self.connections_current.labels(listener).dec()
        self.bytes_in.labels(listener).inc(_number(record.get("bytes_in")))
        self.bytes_out.labels(listener).inc(_number(record.get("bytes_out")))

    def _on_queued(self, record: dict[str, Any]) -> None:
        self.messages_received.inc()
        self.message_bytes.inc(_number(record.get("size")))
        self.recipients_accepted.inc(_number(record.get("rcpts")))

    def _on_message_refused(self, record: dict[str, Any]) -> None:
        self.messages_refused.labels(reply_reason(str(record.get("reply", "")), self._catalogue)).inc()

    def _on_rejected(self, record: dict[str, Any]) -> None:
        reply = str(record.get("reply", ""))
        reason = reply_reason(reply, self._catalogue)
        command = str(record.get("command") or "protocol")
        if command == "RCPT":
            self.recipients_refused.labels(reason).inc()
        self.commands_refused.labels(command.lower(), reason).inc()
        if "rate" in reason.split("_"):  # the catalogue's rate-limit replies (RATE_LIMITED, ...)
            self.rate_limit_hits.labels(reason).inc()

    # --- delivery ---------------------------------------------------------------------------------------

    def _on_delivery(self, record: dict[str, Any], result: str) -> None:
        destination = str(record.get("transport") or "local")
        self.deliveries.labels(result, destination).inc()
        delay = record.get("delay")
        if result == "delivered" and isinstance(delay, int | float) and delay >= 0:
            self.delivery_latency.labels(destination).observe(float(delay))

    def _on_transaction(self, record: dict[str, Any]) -> None:
        self.tls_outbound.labels("true" if record.get("tls") else "false").inc()


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if value > 0 else 0.0
