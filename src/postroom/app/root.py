"""The App: builds every part from the Config (build.py), wires them, starts and stops them in order.
What a SIGHUP changes is reload.py's; running until a signal is run.py's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postroom.admin.http import AdminServer
from postroom.app import build, links
from postroom.app.reload import reload
from postroom.app.seat import Seat
from postroom.auth.authenticator import Authenticator
from postroom.auth.throttle import LoginThrottle, ThrottleSettings
from postroom.config.schema import Config
from postroom.delivery.bounce import Bouncer
from postroom.delivery.dkim_keys import DkimKeys
from postroom.delivery.dkim_sign import DkimSigner
from postroom.delivery.remote import RemoteCourier
from postroom.delivery.router import Router
from postroom.delivery.scheduler import Scheduler
from postroom.dns import DnsError, DnsResolver, Resolver
from postroom.mailbox.maildir import Maildirs
from postroom.observe.log import Logger
from postroom.policy.connect import AccessLists
from postroom.policy.limits import RateLimits
from postroom.policy.sender_auth import SenderAuth
from postroom.queue import Queue
from postroom.server.listener import SmtpListener
from postroom.server.tls import CertificatePair, ensure_certificate, server_context
from postroom.store.sqlite import open_database

__all__ = ["App"]


@dataclass
class App:
    """A running postroom: queue, delivery, listeners."""

    config: Config
    log: Logger
    clock: Callable[[], float] = time.time
    listeners: list[SmtpListener] = field(default_factory=list)
    config_loader: Callable[[], Config] | None = None  # SIGHUP reads the config file again with it; None: no
    seat: Seat | None = None  # one of several worker processes (app/workers.py); None: the only process

    def __post_init__(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._dns: Resolver | None = None  # one resolver (and one DNS cache) for every room
        queue_settings = config.queue
        if self.seat is not None and not self.seat.listens:  # the delivery process commits only bounces
            queue_settings = dataclasses.replace(queue_settings, commit_process=False)
        self.queue = Queue(
            settings=queue_settings,
            queue_dir=config.queue_dir,
            database_path=config.database_path,
            clock=self.clock,
            log=self.log.bind(room="queue"),
            id_slot=self.seat.id_slot if self.seat is not None else 0,
        )
        delivery_log = self.log.bind(room="delivery")
        self.dkim_signer = DkimSigner(
            keys=DkimKeys(config.dkim_dir, selector=config.dkim.selector),
            settings=config.dkim,
            log=delivery_log,
            clock=self.clock,
        )
        remote = self.remote = RemoteCourier(
            settings=config.delivery,
            resolver=self.resolver(),
            hostname=config.hostname,
            spool_path=self.queue.spool_path,
            log=delivery_log,
            signer=self.dkim_signer,
            mta_sts=build.mta_sts(config, self.resolver(), clock=self.clock, log=delivery_log),
        )
        self.scheduler = Scheduler(
            queue=self.queue,
            maildirs=Maildirs(config.mailboxes_dir),
            settings=config.delivery,
            log=delivery_log,
            router=(router := Router(local_domains=config.local.domains, remote=remote)),
            bouncer=(
                bouncer := Bouncer(
                    queue=self.queue,
                    hostname=config.hostname,
                    local_domains=config.local.domains,
                    clock=self.clock,
                    log=delivery_log,
                )
            ),
        )
        self.routing = (router, bouncer)  # told of new [local] domains on reload
        self.accounts_db: sqlite3.Connection | None = None  # None until started (and after stop)
        self._throttle_db: sqlite3.Connection | None = None
        self._limit_dbs: list[sqlite3.Connection] = []
        self.rate_limits: RateLimits | None = None
        self.tls_context: ssl.SSLContext | None = None
        self._authenticator: Authenticator | None = None
        self.certificate: CertificatePair | None = None
        self.access_lists: AccessLists | None = None  # [policy] allow/deny, read again on SIGHUP
        self.admin: AdminServer | None = None  # the HTTP listener: dashboard, API, /metrics
        self._waker: asyncio.Task[None] | None = None  # an SMTP worker's wakes to the delivery process
        self._unlisten: list[Callable[[], None]] = []  # readers on the links, removed at stop
        self.started = False  # start() has finished (a reload before that has nothing to tell)

    def resolver(self) -> Resolver | None:
        """The shared DNS resolver; None (remote mail waits, checks fail open; logged) if it cannot be."""
        if self._dns is None:
            try:
                self._dns = DnsResolver(settings=self.config.dns)
            except DnsError as exc:
                self.log.warning("dns.unavailable", error=str(exc))
        return self._dns

    def sender_auth(self) -> SenderAuth | None:
        """SPF, DKIM and DMARC for the MX listener, from the config in effect."""
        return build.sender_auth(self.config, self.resolver)

    def open_front_doors(self) -> None:
        """[policy] in front of every listener, from the config in effect (ConfigError: old doors stay)."""
        self.access_lists = build.front_doors(
            self.config, self.listeners, resolver=self.resolver, clock=self.clock, log=self.log
        )

    @property
    def smtp_address(self) -> tuple[str, int]:
        """The first bound address of the MX listener (tests read the real port here)."""
        return self.address("smtp")

    def address(self, listener: str) -> tuple[str, int]:
        """The first bound address of a listener ("smtp", "submission", "submissions", "admin")."""
        if listener == "admin" and self.admin is not None and self.admin.bound:
            return self.admin.bound[0]
        for candidate in self.listeners:
            if candidate.name == listener:
                return candidate.bound[0]
        raise KeyError(f"no listener {listener!r}")

    async def start(self) -> None:
        config = self.config
        await self.queue.start()
        seat = self.seat
        if seat is None or seat.listens:
            await self._start_listeners(seat)
        self._link(seat)
        if seat is None or seat.delivers:
            await self.scheduler.start()
        if config.admin.listen and (seat is None or seat.serves_admin):
            self.admin = build.admin_server(
                config, clock=self.clock, log=self.log, checks=self._deliverability_checks
            )
            await self.admin.start()
        self.started = True
        self.log.info(
            "server.started",
            **{
                item.name: " ".join(f"{h}:{p}" for h, p in item.bound)
                for item in self.listeners
                if item.bound
            },
        )

    async def _start_listeners(self, seat: Seat | None) -> None:
        """What only a process that takes mail needs: accounts, TLS, logins, rate limits, the listeners
        (the delivery process builds none of it)."""
        config = self.config
        accounts, self.accounts_db = build.open_accounts(config)
        self.certificate = ensure_certificate(
            cert_file=config.tls.cert_file,
            key_file=config.tls.key_file,
            data_dir=config.data_dir,
            hostname=config.hostname,
        )
        tls = self.tls_context = server_context(self.certificate)
        # The throttle writes from the authenticator's worker threads: a connection of its own.
        self._throttle_db = open_database(config.database_path)
        throttle = LoginThrottle(db=self._throttle_db, settings=ThrottleSettings.from_config(config.auth))
        self._authenticator = Authenticator(
            accounts=accounts,
            throttle=throttle,
            clock=self.clock,
            scram_iterations=config.auth.scram_iterations,
        )
        rate_limits, self._limit_dbs = build.rate_limits(config, clock=self.clock, log=self.log)
        self.rate_limits = rate_limits
        await rate_limits.start()
        self.listeners = build.listeners(
            config,
            queue=self.queue,
            accounts=accounts,
            authenticator=self._authenticator,
            tls=tls,
            limits=rate_limits,
            mx_sender_auth=self.sender_auth(),
            clock=self.clock,
            log=self.log,
            workers=seat.count if seat is not None else 1,
        )
        self.open_front_doors()
        for listener in self.listeners:
            await listener.start(seat.sockets.get(listener.name, ()) if seat is not None else None)

    def _link(self, seat: Seat | None) -> None:
        """With a delivery process (links.py): SMTP workers wake it after their commits and worker 0
        counts its records; the delivery process listens for wakes and sends its records."""
        if seat is None or seat.wake is None:
            return
        work = self.queue.wait_for_work()
        if seat.role == "delivery":
            self._unlisten.append(links.receive_wakes(seat.wake, work))
            if seat.events is not None:
                links.forward_events(self.log, seat.events)
            return
        self._waker = links.notify_commits(work, seat.wake)
        if seat.events is not None:
            self._unlisten.append(links.receive_events(seat.events, self.log))

    async def _deliverability_checks(self) -> list[dict[str, Any]]:
        return await build.deliverability_checks(self.config, self.resolver())

    def reload(self) -> bool:
        """SIGHUP: the config file, certificates, DKIM keys, [policy] list files, the log file (reload.py).
        True when the certificate was loaded again."""
        return reload(self)

    async def stop(self) -> None:
        """Stop in reverse order: no new mail, finish what was acknowledged, then the queue."""
        grace = self.config.smtp.shutdown_grace
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None
        for listener in self.listeners:
            await listener.stop(grace=grace)
        if self.rate_limits is not None:
            await self.rate_limits.stop()  # writes the last counts
        for limit_db in self._limit_dbs:
            limit_db.close()
        self._limit_dbs.clear()
        await self.scheduler.stop()
        await self.remote.close()  # QUIT on the connections kept for reuse
        await self._unlink()
        await self.queue.stop()
        if self._authenticator is not None:
            self._authenticator.close()
            self._authenticator = None
        for db in (self.accounts_db, self._throttle_db):
            if db is not None:
                db.close()
        self.accounts_db = self._throttle_db = None
        self.started = False
        self.log.info("server.stopped")

    async def _unlink(self) -> None:
        for unlisten in self._unlisten:
            unlisten()
        self._unlisten.clear()
        if self._waker is not None:
            self._waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waker
            self._waker = None
