"""The session's door to rate limits and greylisting: asks at connect, MAIL, RCPT and after a message, and
answers None (go on) or a Refusal carrying the reply from the catalogue. Writes its state behind.

Hot path: every check is a dictionary look-up in memory (greylisting adds one primary-key read when on).
Counters and changed triplets are written in one transaction every ``[limits] flush_interval`` seconds, off
the event loop; a crash forgets at most that much (a few more messages let through, one more deferral).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from postroom.config.schema import GreylistSettings, LimitsSettings
from postroom.observe.log import Logger, sanitize
from postroom.policy.greylist import Greylist
from postroom.policy.limitstore import LimitStore
from postroom.policy.ratelimit import Rate, RateCounters
from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["RateLimits", "Refusal"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PURGE_EVERY = 3600.0  # seconds between deletions of expired rows
_EXEMPT_CACHE = 4096  # client addresses whose exemption is remembered


@dataclass(frozen=True, slots=True)
class Refusal:
    """The reply for the client and the reason for the log (they differ on purpose)."""

    reply: Reply
    reason: str


class RateLimits:
    """One per App, shared by every listener (a client's rates do not depend on the port it uses)."""

    def __init__(
        self,
        *,
        settings: LimitsSettings,
        greylist: GreylistSettings,
        relay_networks: tuple[Network, ...],
        store: LimitStore,
        clock: Callable[[], float],
        log: Logger,
    ) -> None:
        self._store = store
        self._clock = clock
        self._log = log
        self._exempt_cache: dict[str, tuple[bool, bool]] = {}
        self._counters = RateCounters()
        # Kept when greylisting is off too: a reload may turn it on, or off with triplets still to write.
        self._greylist = Greylist(settings=greylist, lookup=store.greylist_entry)
        self.update(settings=settings, greylist=greylist, relay_networks=relay_networks)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    def update(
        self, *, settings: LimitsSettings, greylist: GreylistSettings, relay_networks: tuple[Network, ...]
    ) -> None:
        """New rates, exemptions and greylisting (a config reload): the counts so far are kept, so a client
        near its limit stays near it; the next check of every session, open ones too, uses the new values."""
        self._settings = settings
        self._exempt_networks = settings.exempt_networks + relay_networks
        self._relay_networks = relay_networks
        self._exempt_cache.clear()
        # The counters are keyed by rate name, not by the Rate object: new limits apply to the counts so far.
        self._connections = Rate("connections", settings.connections_per_minute, 60.0)
        self._recipients = Rate("recipients", settings.recipients_per_hour, 3600.0)
        self._bytes = Rate("bytes", settings.bytes_per_hour, 3600.0)
        self._greylist_settings = greylist
        self._greylist.update(greylist)

    # --- the checks ------------------------------------------------------------------------------------

    def connection(self, ip: str) -> Refusal | None:
        """A new connection from ``ip``: counted, and refused beyond the per-minute rate."""
        if self._exempt(ip)[0] or self._counters.admit(self._connections, ip, self._clock()):
            return None
        return self._refuse(replies.CONNECTION_RATE_EXCEEDED, "connections_per_minute", ip, client=ip)

    def mail(
        self, *, ip: str, sender: str, user: str | None, messages: int, size: int | None
    ) -> Refusal | None:
        """MAIL FROM, after ``messages`` accepted in this connection (``size`` from SIZE=, if given)."""
        limit = self._settings.messages_per_connection
        if limit > 0 and messages >= limit:
            return self._refuse(replies.TOO_MANY_MESSAGES, "messages_per_connection", ip, client=ip)
        now = self._clock()
        if user is not None and self._counters.exceeds(self._bytes, user, now, max(size or 0, 1)):
            return self._refuse(replies.BYTE_RATE_EXCEEDED, "bytes_per_hour", user, client=ip)
        subject = self._sender_subject(ip, sender, user)
        if subject is not None and self._counters.exceeds(self._recipients, subject, now):
            return self._refuse(replies.RECIPIENT_RATE_EXCEEDED, "recipients_per_hour", subject, client=ip)
        return None

    def rcpt(self, *, ip: str, sender: str, user: str | None, recipient: str) -> Refusal | None:
        """An acceptable recipient: greylisted (first time), or counted for the sender's hourly rate."""
        now = self._clock()
        if self._greylist_settings.enabled and user is None and not self._exempt(ip)[1]:
            domain = recipient.rpartition("@")[2]
            if not self._greylist.allowed(ip=ip, recipient_domain=domain):
                wait = self._greylist.check(ip=ip, sender=sender, recipient=recipient, now=now)
                if wait > 0:
                    self._log.info(
                        "policy.greylisted",
                        client=ip,
                        sender=sanitize(sender),
                        recipient=sanitize(recipient),
                        retry_after=round(wait),
                    )
                    return Refusal(replies.GREYLISTED, f"greylisted for {round(wait)} s more")
        subject = self._sender_subject(ip, sender, user)
        if subject is None or self._counters.admit(self._recipients, subject, now):
            return None
        return self._refuse(replies.RECIPIENT_RATE_EXCEEDED, "recipients_per_hour", subject, client=ip)

    def accepted(self, *, user: str | None, size: int) -> None:
        """A message was queued: its bytes count against the authenticated user's hourly rate."""
        if user is not None:
            self._counters.add(self._bytes, user, self._clock(), size)

    def _sender_subject(self, ip: str, sender: str, user: str | None) -> str | None:
        """Whose recipients are counted: the user; else the envelope sender (the null sender per client
        address, since every bounce shares it); nobody for an exempt client."""
        if user is not None:
            return f"user:{user}"
        if self._exempt(ip)[0]:
            return None
        return f"sender:{sender.lower()}" if sender else f"bounces:{ip}"

    def _exempt(self, ip: str) -> tuple[bool, bool]:
        """(in exempt_networks or relay_networks, in relay_networks), remembered per address."""
        cached = self._exempt_cache.get(ip)
        if cached is None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                cached = (False, False)
            else:
                cached = (
                    any(address in net for net in self._exempt_networks),
                    any(address in net for net in self._relay_networks),
                )
            if len(self._exempt_cache) >= _EXEMPT_CACHE:
                self._exempt_cache.clear()
            self._exempt_cache[ip] = cached
        return cached

    def _refuse(self, reply: Reply, limit: str, subject: str, *, client: str) -> Refusal:
        self._log.info("policy.rate_limited", limit=limit, subject=sanitize(subject), client=client)
        return Refusal(reply, f"rate limit {limit} reached for {sanitize(subject)}")

    # --- start, stop and writing behind ---------------------------------------------------------------

    async def start(self) -> None:
        """Load the counts still inside their window, then write behind every ``flush_interval``."""
        rows = await asyncio.to_thread(self._store.load_counts, self._clock())
        self._counters.load(rows)
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._write_behind())

    async def stop(self) -> None:
        """Write what is pending (the last flush) and stop."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _write_behind(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._settings.flush_interval)
            await self.flush()
        await self.flush()  # stop() may come before the first turn

    async def flush(self) -> None:
        """Write pending counts and triplets now (one transaction, in a worker thread)."""
        now = self._clock()
        counts = self._counters.take_batch(now)
        entries = self._greylist.take_batch()
        purge = None
        if now - self._last_purge >= _PURGE_EVERY:
            greylist = self._greylist_settings
            purge = (now, now - greylist.unconfirmed_ttl, now - greylist.confirmed_ttl)
        if not counts and not entries and purge is None:
            return
        try:
            totals = await asyncio.to_thread(self._store.write, counts, entries, purge_before=purge)
        except sqlite3.Error as exc:
            self._counters.write_failed(counts)
            self._greylist.write_failed(entries)
            self._log.warning("policy.flush_failed", error=str(exc), counts=len(counts), entries=len(entries))
            return
        if purge is not None:
            self._last_purge = now
        self._counters.written(totals)
        self._greylist.written(entries)
