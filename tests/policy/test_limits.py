"""RateLimits.update (a config reload): new limits and greylisting apply at once, the counts so far stay."""

from __future__ import annotations

import ipaddress

from postroom.config.schema import GreylistSettings, LimitsSettings
from postroom.observe.log import Logger
from postroom.policy.limits import RateLimits
from postroom.policy.limitstore import LimitStore
from postroom.smtp import replies
from tests.helpers.fakes import FakeClock

CLIENT = "192.0.2.7"
NO_EXEMPTIONS = LimitsSettings(exempt_networks=())


def _limits(limit_store: LimitStore, clock: FakeClock, log: Logger, settings: LimitsSettings) -> RateLimits:
    return RateLimits(
        settings=settings,
        greylist=GreylistSettings(),
        relay_networks=(),
        store=limit_store,
        clock=clock,
        log=log,
    )


def test_a_lower_rate_counts_the_connections_already_made(
    limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = _limits(limit_store, clock, log, NO_EXEMPTIONS)
    for _ in range(5):
        assert limits.connection(CLIENT) is None
    limits.update(
        settings=LimitsSettings(exempt_networks=(), connections_per_minute=5),
        greylist=GreylistSettings(),
        relay_networks=(),
    )
    refusal = limits.connection(CLIENT)
    assert refusal is not None
    assert refusal.reply == replies.CONNECTION_RATE_EXCEEDED


def test_relay_networks_from_a_reload_exempt_a_client(
    limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = _limits(limit_store, clock, log, LimitsSettings(exempt_networks=(), connections_per_minute=1))
    assert limits.connection(CLIENT) is None
    assert limits.connection(CLIENT) is not None  # the answer is remembered per address ...
    limits.update(
        settings=LimitsSettings(exempt_networks=(), connections_per_minute=1),
        greylist=GreylistSettings(),
        relay_networks=(ipaddress.ip_network("192.0.2.0/24"),),
    )
    assert limits.connection(CLIENT) is None  # ... and worked out again after a reload


def test_greylisting_turned_on_and_off_by_a_reload(
    limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = _limits(limit_store, clock, log, NO_EXEMPTIONS)
    rcpt = {"ip": CLIENT, "sender": "a@elsewhere.test", "user": None, "recipient": "b@example.test"}
    assert limits.rcpt(**rcpt) is None  # type: ignore[arg-type]
    limits.update(settings=NO_EXEMPTIONS, greylist=GreylistSettings(enabled=True), relay_networks=())
    refusal = limits.rcpt(**rcpt)  # type: ignore[arg-type]
    assert refusal is not None
    assert refusal.reply == replies.GREYLISTED
    limits.update(settings=NO_EXEMPTIONS, greylist=GreylistSettings(enabled=False), relay_networks=())
    assert limits.rcpt(**rcpt) is None  # type: ignore[arg-type]
