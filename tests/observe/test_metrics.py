"""Metrics derived from the structured log events: each mail event moves the right counter, refusals are
labelled by their catalogue name, the queue is read at scrape time, and each Metrics has its own registry."""

from __future__ import annotations

import io

from postroom.observe.log import Logger
from postroom.observe.maillog import MailLog
from postroom.observe.metrics import Metrics, QueueStats, reply_reason
from postroom.smtp import replies


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def wired() -> tuple[Metrics, Logger]:
    metrics = Metrics()
    log = Logger(stream=io.StringIO())
    log.add_listener(metrics.observe)
    return metrics, log


def test_sessions_count_connections_by_listener_and_bytes_at_close() -> None:
    metrics, log = wired()
    maillog = MailLog(log)
    maillog.connected(session_id="s1", client="192.0.2.1", listener="smtp")
    maillog.connected(session_id="s2", client="192.0.2.2", listener="submission")
    maillog.refused_connection(client="192.0.2.3", listener="smtp", reply=str(replies.TOO_MANY_CONNECTIONS))
    assert sample(metrics, "postroom_connections_current", listener="smtp") == 1
    maillog.disconnected(
        session_id="s1", client="192.0.2.1", messages=0, reason="quit", listener="smtp",
        bytes_in=40, bytes_out=90,
    )
    assert sample(metrics, "postroom_connections_current", listener="smtp") == 0
    assert sample(metrics, "postroom_connections_total", listener="smtp", result="accepted") == 1
    assert sample(metrics, "postroom_connections_total", listener="smtp", result="refused") == 1
    assert sample(metrics, "postroom_rate_limit_hits_total", limit="too_many_connections") == 1
    assert sample(metrics, "postroom_smtp_received_bytes_total", listener="smtp") == 40
    assert sample(metrics, "postroom_smtp_sent_bytes_total", listener="smtp") == 90


def test_refused_recipients_are_labelled_by_their_reply() -> None:
    metrics, log = wired()
    maillog = MailLog(log)
    for reply in (replies.NO_SUCH_USER, replies.NO_SUCH_USER, replies.RELAY_DENIED):
        maillog.rejected(session_id="s", command="RCPT", argument="x@y.test", reply=str(reply), reason="r")
    maillog.rejected(session_id="s", command="", argument="", reply=str(replies.SYNTAX_ERROR))
    assert sample(metrics, "postroom_recipients_refused_total", reason="no_such_user") == 2
    assert sample(metrics, "postroom_recipients_refused_total", reason="relay_denied") == 1
    assert sample(metrics, "postroom_commands_refused_total", command="protocol", reason="syntax_error") == 1


def test_reply_reason_falls_back_to_the_enhanced_status_then_other() -> None:
    assert reply_reason("550 5.1.1 No such user here", {"550 5.1.1 No such user here": "no_such_user"}) == (
        "no_such_user"
    )
    assert reply_reason("451 4.7.1 Try later, some new policy", {}) == "status_4_7_1"
    assert reply_reason("garbage", {}) == "other"


def test_queued_messages_deliveries_latency_tls_and_auth() -> None:
    metrics, log = wired()
    MailLog(log).queued(queue_id="q", session_id="s", sender="a@b.test", recipients=3, size=1200, client="c")
    log.info("delivery.delivered", queue_id="q", rcpt="x", attempts=1, transport="local", delay=0.2)
    log.info("delivery.delivered", queue_id="q", rcpt="y", attempts=2, transport="smtp", delay=400.0)
    log.info("delivery.deferred", queue_id="q", rcpt="z", attempts=1, transport="smtp", delay=1.0)
    log.info("delivery.failed", queue_id="q", rcpt="w", attempts=5, transport="smtp", delay=9.0)
    log.info("delivery.transaction", queue_id="q", host="mx", tls=True, rcpts=2)
    log.info("tls.started", session_id="s", version="TLSv1.3", cipher="x")
    log.info("auth.failed", session_id="s", client="c", username="u")
    log.info("auth.throttled", session_id="s", client="c", reason="r")
    log.info("ratelimit.exceeded", limit="messages_per_ip")
    assert sample(metrics, "postroom_messages_received_total") == 1
    assert sample(metrics, "postroom_messages_received_bytes_total") == 1200
    assert sample(metrics, "postroom_recipients_accepted_total") == 3
    assert sample(metrics, "postroom_deliveries_total", result="delivered", destination="local") == 1
    assert sample(metrics, "postroom_deliveries_total", result="delivered", destination="smtp") == 1
    assert sample(metrics, "postroom_deliveries_total", result="deferred", destination="smtp") == 1
    assert sample(metrics, "postroom_deliveries_total", result="bounced", destination="smtp") == 1
    assert sample(metrics, "postroom_delivery_latency_seconds_count", destination="smtp") == 1
    assert sample(metrics, "postroom_delivery_latency_seconds_sum", destination="smtp") == 400.0
    assert sample(metrics, "postroom_delivery_transactions_total", tls="true") == 1
    assert sample(metrics, "postroom_tls_inbound_total", result="ok", version="TLSv1.3") == 1
    assert sample(metrics, "postroom_auth_failures_total", reason="bad_credentials") == 1
    assert sample(metrics, "postroom_auth_failures_total", reason="throttled") == 1
    assert sample(metrics, "postroom_rate_limit_hits_total", limit="messages_per_ip") == 1


def test_the_queue_is_read_when_scraped_and_registries_are_separate() -> None:
    first, second = Metrics(), Metrics()
    calls = []

    def stats() -> QueueStats:
        calls.append(1)
        return QueueStats(messages=7, oldest_age=42.5)

    first.watch_queue(stats)
    text = first.render().decode()
    assert "postroom_queue_messages 7.0" in text
    assert "postroom_queue_oldest_message_age_seconds 42.5" in text
    assert calls  # asked at scrape time
    assert "postroom_queue_messages" not in second.render().decode()  # nothing watched: left out
    first.observe({"event": "message.queued", "size": 10, "rcpts": 1})
    assert sample(second, "postroom_messages_received_total") == 0
