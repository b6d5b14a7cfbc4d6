"""Rate limits: the sliding-window counters (pure), their batches in the database, and the session's door
(policy/limits.py) with a fake clock: per IP, per sender, per user, per connection; restarts keep counts."""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from postroom.config.schema import GreylistSettings, LimitsSettings
from postroom.observe.log import Logger
from postroom.policy.limits import RateLimits
from postroom.policy.limitstore import LimitStore
from postroom.policy.ratelimit import Rate, RateCounters, SlotTotal
from postroom.smtp import replies
from postroom.store.sqlite import open_database
from tests.helpers.fakes import FakeClock, Records

PER_MINUTE = Rate("connections", 3, 60.0)
START = 1_700_000_020.0  # 40 s into a one-minute slot


# --- the counters, pure -----------------------------------------------------------------------------------


def test_admit_counts_up_to_the_limit_and_refuses_beyond() -> None:
    counters = RateCounters()
    assert [counters.admit(PER_MINUTE, "192.0.2.1", START) for _ in range(4)] == [True, True, True, False]
    assert counters.used(PER_MINUTE, "192.0.2.1", START) == 3
    assert counters.admit(PER_MINUTE, "192.0.2.2", START)  # another subject has its own count


def test_a_refused_attempt_is_not_counted() -> None:
    counters = RateCounters()
    for _ in range(10):
        counters.admit(PER_MINUTE, "a", START)
    assert counters.used(PER_MINUTE, "a", START) == 3


def test_the_window_slides_the_previous_slot_weighs_less_as_time_passes() -> None:
    counters = RateCounters()
    for _ in range(3):
        counters.admit(PER_MINUTE, "a", START)  # slot N, at 40 s
    # 30 s later (10 s into slot N+1): 50 s of the window lie in slot N -> 3 * 50/60 = 2.5 used.
    assert counters.used(PER_MINUTE, "a", START + 30) == pytest.approx(2.5)
    assert not counters.admit(PER_MINUTE, "a", START + 30)
    # 60 s later (40 s into slot N+1): 3 * 20/60 = 1 used, 2 more fit.
    assert counters.used(PER_MINUTE, "a", START + 60) == pytest.approx(1.0)
    assert counters.admit(PER_MINUTE, "a", START + 60)
    assert counters.admit(PER_MINUTE, "a", START + 60)
    assert not counters.admit(PER_MINUTE, "a", START + 60)
    # Two whole periods later nothing is left.
    assert counters.used(PER_MINUTE, "a", START + 180) == 0


def test_amounts_weigh_more_than_one_bytes() -> None:
    rate = Rate("bytes", 1000, 3600.0)
    counters = RateCounters()
    counters.add(rate, "alice", START, 900)
    assert not counters.exceeds(rate, "alice", START, 100)
    assert counters.exceeds(rate, "alice", START, 101)
    counters.add(rate, "alice", START, 5000)  # add() counts whatever the limit: the message was accepted
    assert counters.used(rate, "alice", START) == 5900


def test_a_limit_of_zero_means_no_limit_and_counts_nothing() -> None:
    counters = RateCounters()
    off = Rate("connections", 0, 60.0)
    assert all(counters.admit(off, "a", START) for _ in range(100))
    assert len(counters) == 0


def test_batches_move_pending_amounts_and_a_failed_write_puts_them_back() -> None:
    counters = RateCounters()
    counters.admit(PER_MINUTE, "a", START)
    counters.admit(PER_MINUTE, "a", START)
    batch = counters.take_batch(START)
    assert [(item.key, item.amount) for item in batch] == [("connections:a", 2.0)]
    assert counters.take_batch(START) == []  # nothing new
    assert counters.used(PER_MINUTE, "a", START) == 2  # in flight still counts
    counters.admit(PER_MINUTE, "a", START)
    counters.write_failed(batch)
    (again,) = counters.take_batch(START)
    assert again.amount == 3.0


def test_expired_slots_are_forgotten_when_a_batch_is_taken() -> None:
    counters = RateCounters()
    counters.admit(PER_MINUTE, "a", START)
    batch = counters.take_batch(START)
    counters.written([SlotTotal(item.key, item.slot, item.amount) for item in batch])
    assert len(counters) == 1
    counters.take_batch(START + 79)
    assert len(counters) == 1  # the previous slot still counts in the next one
    counters.take_batch(START + 121)
    assert len(counters) == 0


# --- the database side ------------------------------------------------------------------------------------


def test_batches_are_added_in_the_database_so_two_nodes_sum_up(limit_store: LimitStore) -> None:
    node_a, node_b = RateCounters(), RateCounters()
    for _ in range(2):
        node_a.admit(PER_MINUTE, "a", START)
    node_b.admit(PER_MINUTE, "a", START)
    node_a.written(limit_store.write(node_a.take_batch(START), {}))
    node_b.written(limit_store.write(node_b.take_batch(START), {}))
    assert node_b.used(PER_MINUTE, "a", START) == 3  # node B now knows of node A's two
    assert not node_b.admit(PER_MINUTE, "a", START)
    fresh = RateCounters()
    fresh.load(limit_store.load_counts(START))
    assert fresh.used(PER_MINUTE, "a", START) == 3


def test_load_skips_expired_rows_and_purge_deletes_them(limit_store: LimitStore, tmp_path: Path) -> None:
    counters = RateCounters()
    counters.admit(PER_MINUTE, "a", START)
    limit_store.write(counters.take_batch(START), {})
    assert limit_store.load_counts(START + 200) == []
    limit_store.write([], {}, purge_before=(START + 200, 0.0, 0.0))
    db = sqlite3.connect(tmp_path / "postroom.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM rate_counts").fetchone() == (0,)
    finally:
        db.close()


# --- the session's door -----------------------------------------------------------------------------------

Make = Callable[..., Awaitable[RateLimits]]


def _limits(limit_store: LimitStore, clock: FakeClock, log: Logger, **settings: object) -> RateLimits:
    return RateLimits(
        settings=LimitsSettings(**settings),  # type: ignore[arg-type]
        greylist=GreylistSettings(),
        relay_networks=(ipaddress.ip_network("10.0.0.0/8"),),
        store=limit_store,
        clock=clock,
        log=log,
    )


@pytest.fixture
async def make(limit_store: LimitStore, clock: FakeClock, log: Logger) -> AsyncIterator[Make]:
    started: list[RateLimits] = []

    async def factory(**settings: object) -> RateLimits:
        limits = _limits(limit_store, clock, log, **settings)
        await limits.start()
        started.append(limits)
        return limits

    yield factory
    for limits in started:
        await limits.stop()


async def test_connections_per_minute_per_ip_gives_421_4_7_0(
    make: Make, clock: FakeClock, records: Records
) -> None:
    limits = await make(connections_per_minute=2)
    assert limits.connection("192.0.2.7") is None
    assert limits.connection("192.0.2.7") is None
    refusal = limits.connection("192.0.2.7")
    assert refusal is not None
    assert refusal.reply == replies.CONNECTION_RATE_EXCEEDED
    assert (refusal.reply.code, str(refusal.reply.status)) == (421, "4.7.0")
    assert "connections_per_minute" in refusal.reason
    assert limits.connection("192.0.2.8") is None  # another address is served
    (event,) = records.events("policy.rate_limited")
    assert event["limit"] == "connections_per_minute"
    assert event["client"] == "192.0.2.7"
    clock.now += 120
    assert limits.connection("192.0.2.7") is None  # the minute has passed


async def test_exempt_and_relay_networks_have_no_connection_rate(make: Make) -> None:
    limits = await make(connections_per_minute=1)
    assert all(limits.connection("127.0.0.1") is None for _ in range(5))  # exempt_networks by default
    assert all(limits.connection("10.1.2.3") is None for _ in range(5))  # [smtp] relay_networks


async def test_messages_per_connection_gives_421_at_the_next_mail(make: Make) -> None:
    limits = await make(messages_per_connection=2)
    assert limits.mail(ip="192.0.2.7", sender="a@x.test", user=None, messages=1, size=None) is None
    refusal = limits.mail(ip="192.0.2.7", sender="a@x.test", user=None, messages=2, size=None)
    assert refusal is not None
    assert refusal.reply == replies.TOO_MANY_MESSAGES
    assert (refusal.reply.code, str(refusal.reply.status)) == (421, "4.7.0")


async def test_recipients_per_hour_per_sender_gives_451_4_7_1(make: Make, clock: FakeClock) -> None:
    limits = await make(recipients_per_hour=3)
    ip = "192.0.2.7"
    for n in range(3):
        assert limits.rcpt(ip=ip, sender="Spam@X.test", user=None, recipient=f"u{n}@here.test") is None
    refusal = limits.rcpt(ip=ip, sender="spam@x.test", user=None, recipient="u9@here.test")  # same, any case
    assert refusal is not None
    assert refusal.reply == replies.RECIPIENT_RATE_EXCEEDED
    assert (refusal.reply.code, str(refusal.reply.status)) == (451, "4.7.1")
    # The next MAIL from that sender is refused at once; another sender is not.
    assert limits.mail(ip=ip, sender="spam@x.test", user=None, messages=0, size=None) is not None
    assert limits.mail(ip=ip, sender="other@x.test", user=None, messages=0, size=None) is None
    clock.now += 7200
    assert limits.rcpt(ip=ip, sender="spam@x.test", user=None, recipient="u9@here.test") is None


async def test_the_authenticated_user_is_counted_not_the_sender_nor_the_exemption(make: Make) -> None:
    limits = await make(recipients_per_hour=2)
    for sender in ("alice@x.test", "alias@x.test"):
        assert limits.rcpt(ip="127.0.0.1", sender=sender, user="alice@x.test", recipient="r@y.test") is None
    refusal = limits.rcpt(ip="127.0.0.1", sender="third@x.test", user="alice@x.test", recipient="r@y.test")
    assert refusal is not None
    assert "user:alice@x.test" in refusal.reason
    # Without AUTH, the loopback client is exempt from per-sender rates.
    assert all(
        limits.rcpt(ip="127.0.0.1", sender="alice@x.test", user=None, recipient="r@y.test") is None
        for _ in range(5)
    )


async def test_null_sender_is_counted_per_client_address(make: Make) -> None:
    limits = await make(recipients_per_hour=1)
    assert limits.rcpt(ip="192.0.2.1", sender="", user=None, recipient="r@y.test") is None
    assert limits.rcpt(ip="192.0.2.2", sender="", user=None, recipient="r@y.test") is None
    assert limits.rcpt(ip="192.0.2.1", sender="", user=None, recipient="r@y.test") is not None


async def test_bytes_per_hour_per_user_gives_451_4_7_1_at_mail(make: Make, clock: FakeClock) -> None:
    limits = await make(bytes_per_hour=10_000)
    user = "alice@x.test"
    assert limits.mail(ip="192.0.2.1", sender=user, user=user, messages=0, size=8000) is None
    limits.accepted(user=user, size=8000)
    assert limits.mail(ip="192.0.2.1", sender=user, user=user, messages=1, size=None) is None
    refusal = limits.mail(ip="192.0.2.1", sender=user, user=user, messages=1, size=3000)  # SIZE= says too big
    assert refusal is not None
    assert refusal.reply == replies.BYTE_RATE_EXCEEDED
    assert (refusal.reply.code, str(refusal.reply.status)) == (451, "4.7.1")
    limits.accepted(user=user, size=3000)  # a message sent without SIZE= still counts
    assert limits.mail(ip="192.0.2.1", sender=user, user=user, messages=2, size=None) is not None
    limits.accepted(user=None, size=10**9)  # unauthenticated mail has no byte budget
    clock.now += 7200
    assert limits.mail(ip="192.0.2.1", sender=user, user=user, messages=2, size=None) is None


async def test_counts_survive_a_restart_through_the_database(
    limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    first = _limits(limit_store, clock, log, recipients_per_hour=2)
    await first.start()
    for _ in range(2):
        assert first.rcpt(ip="192.0.2.1", sender="s@x.test", user=None, recipient="r@y.test") is None
    await first.stop()  # writes the last batch
    second = _limits(limit_store, clock, log, recipients_per_hour=2)
    await second.start()
    try:
        assert second.rcpt(ip="192.0.2.1", sender="s@x.test", user=None, recipient="r@y.test") is not None
    finally:
        await second.stop()


async def test_a_failed_write_is_logged_and_retried(
    tmp_path: Path, clock: FakeClock, log: Logger, records: Records
) -> None:
    writer = open_database(tmp_path / "postroom.db", durable=False)
    reader = open_database(tmp_path / "postroom.db", durable=False)
    blocker = open_database(tmp_path / "postroom.db")
    writer.execute("PRAGMA busy_timeout = 0")
    limits = _limits(LimitStore(writer=writer, reader=reader), clock, log, recipients_per_hour=5)
    try:
        await limits.start()
        limits.rcpt(ip="192.0.2.1", sender="s@x.test", user=None, recipient="r@y.test")
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        await limits.flush()
        assert records.events("policy.flush_failed")
        blocker.execute("ROLLBACK")
        await limits.flush()
        assert store_total(tmp_path) == 1.0
    finally:
        await limits.stop()
        for db in (writer, reader, blocker):
            db.close()


def store_total(tmp_path: Path) -> float:
    db = sqlite3.connect(tmp_path / "postroom.db")
    try:
        return float(db.execute("SELECT COALESCE(SUM(amount), 0) FROM rate_counts").fetchone()[0])
    finally:
        db.close()
