"""The composition root: builds every part from the Config, wires them, starts and stops them in order.
The only place that knows how the rooms fit together."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sqlite3
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator
from postroom.auth.sasl import MECHANISMS
from postroom.auth.throttle import LoginThrottle
from postroom.config.schema import Config
from postroom.delivery.bounce import Bouncer
from postroom.delivery.remote import RemoteCourier
from postroom.delivery.router import Router
from postroom.delivery.scheduler import Scheduler
from postroom.dns import DnsError, DnsResolver, Resolver
from postroom.mailbox.maildir import Maildirs
from postroom.observe.log import Logger
from postroom.observe.maillog import MailLog
from postroom.queue import Queue
from postroom.server.limits import ConnectionLimits
from postroom.server.listener import SmtpListener
from postroom.server.session import SessionServices
from postroom.server.tls import CertificatePair, ensure_certificate, server_context
from postroom.smtp.server import ServerSettings
from postroom.store.sqlite import open_database

__all__ = ["App", "open_accounts", "running_app", "serve_forever"]


def open_accounts(config: Config) -> tuple[Accounts, sqlite3.Connection]:
    """Accounts over a database connection of their own (the caller closes it)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(config.database_path)
    return Accounts(db=db, domains=config.local.domains, plus_separator=config.local.plus_separator), db


@dataclass
class App:
    """A running postroom: queue, delivery, listeners."""

    config: Config
    log: Logger
    clock: Callable[[], float] = time.time
    listeners: list[SmtpListener] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.queue = Queue(
            settings=config.queue,
            queue_dir=config.queue_dir,
            database_path=config.database_path,
            clock=self.clock,
            log=self.log.bind(room="queue"),
        )
        delivery_log = self.log.bind(room="delivery")
        remote = RemoteCourier(
            settings=config.delivery,
            resolver=self._resolver(),
            hostname=config.hostname,
            spool_path=self.queue.spool_path,
            log=delivery_log,
        )
        self.scheduler = Scheduler(
            queue=self.queue,
            maildirs=Maildirs(config.mailboxes_dir),
            settings=config.delivery,
            log=delivery_log,
            router=Router(local_domains=config.local.domains, remote=remote),
            bouncer=Bouncer(
                queue=self.queue,
                hostname=config.hostname,
                local_domains=config.local.domains,
                clock=self.clock,
                log=delivery_log,
            ),
        )
        self._db: sqlite3.Connection | None = None
        self._throttle_db: sqlite3.Connection | None = None
        self._tls: ssl.SSLContext | None = None
        self._authenticator: Authenticator | None = None
        self.certificate: CertificatePair | None = None

    def _resolver(self) -> Resolver | None:
        """The DNS resolver for remote delivery; None (remote mail waits, logged) when none can be built."""
        try:
            return DnsResolver(settings=self.config.dns)
        except DnsError as exc:
            self.log.warning("dns.unavailable", error=str(exc))
            return None

    @property
    def smtp_address(self) -> tuple[str, int]:
        """The first bound address of the MX listener (tests read the real port here)."""
        return self.address("smtp")

    def address(self, listener: str) -> tuple[str, int]:
        """The first bound address of a listener ("smtp", "submission", "submissions")."""
        for candidate in self.listeners:
            if candidate.name == listener:
                return candidate.bound[0]
        raise KeyError(f"no listener {listener!r}")

    async def start(self) -> None:
        config = self.config
        await self.queue.start()
        accounts, self._db = open_accounts(config)
        self.certificate = ensure_certificate(
            cert_file=config.tls.cert_file,
            key_file=config.tls.key_file,
            data_dir=config.data_dir,
            hostname=config.hostname,
        )
        tls = self._tls = server_context(self.certificate)
        # The throttle writes from the authenticator's worker threads: a connection of its own.
        self._throttle_db = open_database(config.database_path)
        self._authenticator = Authenticator(
            accounts=accounts, throttle=LoginThrottle(db=self._throttle_db), clock=self.clock
        )
        smtp = config.smtp
        common = SessionServices(
            hostname=config.hostname,
            protocol=ServerSettings(
                hostname=config.hostname,
                max_message_size=smtp.max_message_size,
                max_recipients=smtp.max_recipients,
                max_errors=smtp.max_errors,
                long_lines=smtp.long_lines,
                bare_line_endings=smtp.bare_line_endings,
                starttls=True,  # opportunistic on the MX port (RFC 3207)
            ),
            smtp=smtp,
            queue=self.queue,
            accounts=accounts,
            limits=ConnectionLimits(max_total=smtp.max_connections, max_per_ip=smtp.max_connections_per_ip),
            maillog=MailLog(self.log.bind(room="smtp")),
            log=self.log.bind(room="smtp"),
            clock=self.clock,
            tls_context=tls,
        )
        submission = dataclasses.replace(
            common,
            protocol=dataclasses.replace(common.protocol, auth_mechanisms=MECHANISMS),
            authenticator=self._authenticator,
            require_auth=True,
        )
        implicit = dataclasses.replace(
            submission,
            protocol=dataclasses.replace(submission.protocol, starttls=False, implicit_tls=True),
            tls_context=None,
        )
        self.listeners = [
            SmtpListener(name="smtp", addresses=smtp.listen, services=common),
            SmtpListener(name="submission", addresses=config.submission.listen, services=submission),
            SmtpListener(
                name="submissions", addresses=config.submissions.listen, services=implicit, implicit_tls=tls
            ),
        ]
        for listener in self.listeners:
            await listener.start()
        await self.scheduler.start()
        self.log.info(
            "server.started",
            **{
                item.name: " ".join(f"{h}:{p}" for h, p in item.bound)
                for item in self.listeners
                if item.bound
            },
        )

    def reload(self) -> bool:
        """SIGHUP: load the certificate files again (new TLS connections use them; open ones go on).
        On any error the old certificate stays in use and the error is logged."""
        if self._tls is None or self.certificate is None:
            return False
        try:
            self._tls.load_cert_chain(self.certificate.cert_file, self.certificate.key_file)
        except (OSError, ssl.SSLError) as exc:
            self.log.warning("server.reload_failed", error=str(exc))  # the old certificate stays
            return False
        self.log.info("server.reloaded", certificate=str(self.certificate.cert_file))
        return True

    async def stop(self) -> None:
        """Stop in reverse order: no new mail, finish what was acknowledged, then the queue."""
        grace = self.config.smtp.shutdown_grace
        for listener in self.listeners:
            await listener.stop(grace=grace)
        await self.scheduler.stop()
        await self.queue.stop()
        if self._authenticator is not None:
            self._authenticator.close()
            self._authenticator = None
        for db in (self._db, self._throttle_db):
            if db is not None:
                db.close()
        self._db = self._throttle_db = None
        self.log.info("server.stopped")


@contextlib.asynccontextmanager
async def running_app(config: Config, *, log: Logger | None = None) -> AsyncIterator[App]:
    """Start an App and yield it once every listener is bound; stop it on the way out."""
    app = App(config=config, log=log or Logger(level=config.log.level, fmt=config.log.format))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def serve_forever(config: Config, *, log: Logger, on_ready: Callable[[App], None]) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pid_file = config.data_dir / "postroom.pid"
    async with running_app(config, log=log) as app:
        loop.add_signal_handler(signal.SIGHUP, app.reload)
        pid_file.write_text(f"{os.getpid()}\n")  # for `postroom reload`
        try:
            on_ready(app)
            await stop.wait()
            log.info("server.stopping", reason="signal")
        finally:
            pid_file.unlink(missing_ok=True)
