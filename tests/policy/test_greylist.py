"""Greylisting: triplets (client /24 or /64, sender, recipient), the delay, expiry, the allow lists, who is
never greylisted, and triplets kept in the database across a restart. Time is a FakeClock."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from postroom.config.schema import GreylistSettings, LimitsSettings
from postroom.observe.log import Logger
from postroom.policy.greylist import GreyEntry, Greylist, client_network, triplet
from postroom.policy.limits import RateLimits
from postroom.policy.limitstore import LimitStore
from postroom.smtp import replies
from tests.helpers.fakes import FakeClock, Records

NOW = 1_700_000_000.0
SETTINGS = GreylistSettings(enabled=True)


def _greylist(settings: GreylistSettings = SETTINGS) -> Greylist:
    return Greylist(settings=settings, lookup=lambda key: None)


def test_client_network_is_the_slash_24_or_slash_64() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.9") == "192.0.2.0/24"  # a mapped IPv4 client is an IPv4 client
    assert triplet("192.0.2.1", "A@X.test", "B@Y.test") == triplet("192.0.2.200", "a@x.test", "b@y.test")


def test_first_attempt_waits_the_delay_a_retry_after_it_passes() -> None:
    greylist = _greylist()
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW) == 300
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW + 100) == 200
    # The retry may come from a neighbour in the same /24 (a sending farm).
    assert greylist.check(ip="192.0.2.2", sender="a@x.test", recipient="b@y.test", now=NOW + 301) == 0
    assert greylist.check(ip="192.0.2.3", sender="a@x.test", recipient="b@y.test", now=NOW + 302) == 0


def test_each_part_of_the_triplet_counts() -> None:
    greylist = _greylist()
    greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW)
    later = NOW + 400
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=later) == 0
    assert greylist.check(ip="198.51.100.1", sender="a@x.test", recipient="b@y.test", now=later) == 300
    assert greylist.check(ip="192.0.2.1", sender="c@x.test", recipient="b@y.test", now=later) == 300
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="d@y.test", now=later) == 300


def test_an_unconfirmed_triplet_expires_and_starts_over() -> None:
    greylist = _greylist()
    greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW)
    too_late = NOW + SETTINGS.unconfirmed_ttl + 1
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=too_late) == 300


def test_a_passed_triplet_lasts_36_days_after_its_last_use() -> None:
    greylist = _greylist()
    greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW)
    passed = NOW + 300
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=passed) == 0
    used = passed + 30 * 86400  # used again within 36 days: its lifetime starts again
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=used) == 0
    still = used + 35 * 86400
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=still) == 0
    gone = still + SETTINGS.confirmed_ttl + 1
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=gone) == 300


def test_the_allow_lists_match_client_networks_and_recipient_domains() -> None:
    greylist = _greylist(
        GreylistSettings(
            enabled=True,
            allow_networks=(ipaddress.ip_network("198.51.100.0/24"),),
            allow_domains=("Partner.test",),
        )
    )
    assert greylist.allowed(ip="198.51.100.9", recipient_domain="y.test")
    assert greylist.allowed(ip="192.0.2.1", recipient_domain="partner.test")
    assert not greylist.allowed(ip="192.0.2.1", recipient_domain="y.test")


def test_changed_entries_are_batched_and_lookups_see_them_until_written() -> None:
    stored: dict[str, GreyEntry] = {}
    greylist = Greylist(settings=SETTINGS, lookup=stored.get)
    greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW)
    batch = greylist.take_batch()
    assert list(batch.values()) == [GreyEntry(first_seen=NOW, last_seen=NOW, passed=False)]
    # While the batch is being written, the entry is still known (not new again).
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW + 10) == 290
    greylist.write_failed(batch)
    retry = greylist.take_batch()
    assert len(retry) == 1
    stored.update(retry)
    greylist.written(retry)
    assert greylist.check(ip="192.0.2.1", sender="a@x.test", recipient="b@y.test", now=NOW + 301) == 0


# --- through the session's door, with the database --------------------------------------------------------


def _limits(limit_store: LimitStore, clock: FakeClock, log: Logger, **greylist: object) -> RateLimits:
    return RateLimits(
        settings=LimitsSettings(),
        greylist=GreylistSettings(enabled=True, **greylist),  # type: ignore[arg-type]
        relay_networks=(ipaddress.ip_network("10.0.0.0/8"),),
        store=limit_store,
        clock=clock,
        log=log,
    )


async def test_greylisted_rcpt_is_451_4_7_1_and_logged(
    limit_store: LimitStore, clock: FakeClock, log: Logger, records: Records
) -> None:
    limits = _limits(limit_store, clock, log)
    await limits.start()
    try:
        refusal = limits.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@y.test")
        assert refusal is not None
        assert refusal.reply == replies.GREYLISTED
        assert (refusal.reply.code, str(refusal.reply.status)) == (451, "4.7.1")
        assert "try again later" in refusal.reply.text
        (event,) = records.events("policy.greylisted")
        assert event["retry_after"] == 300
        clock.now += 301
        assert limits.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@y.test") is None
    finally:
        await limits.stop()


async def test_authenticated_users_relay_networks_and_allow_lists_are_never_greylisted(
    limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = _limits(limit_store, clock, log, allow_domains=("partner.test",))
    await limits.start()
    try:
        assert limits.rcpt(ip="192.0.2.1", sender="a@x.test", user="a@x.test", recipient="b@y.test") is None
        assert limits.rcpt(ip="10.9.9.9", sender="a@x.test", user=None, recipient="b@y.test") is None
        assert limits.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@partner.test") is None
    finally:
        await limits.stop()


async def test_a_triplet_survives_a_restart(limit_store: LimitStore, clock: FakeClock, log: Logger) -> None:
    first = _limits(limit_store, clock, log)
    await first.start()
    assert first.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@y.test") is not None
    await first.stop()
    clock.now += 301
    second = _limits(limit_store, clock, log)
    await second.start()
    try:
        assert second.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@y.test") is None
    finally:
        await second.stop()


async def test_expired_triplets_are_purged_from_the_database(
    limit_store: LimitStore, clock: FakeClock, log: Logger, tmp_path: Path
) -> None:
    limits = _limits(limit_store, clock, log)
    await limits.start()
    try:
        limits.rcpt(ip="192.0.2.1", sender="a@x.test", user=None, recipient="b@y.test")
        await limits.flush()
        key = triplet("192.0.2.1", "a@x.test", "b@y.test")
        assert limit_store.greylist_entry(key) is not None
        clock.now += SETTINGS.unconfirmed_ttl + 3601  # past its lifetime, and time for an hourly purge
        await limits.flush()
        assert limit_store.greylist_entry(key) is None
    finally:
        await limits.stop()
