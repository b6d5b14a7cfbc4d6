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
from typing import Any

from postroom.admin.activity import Activity
from postroom.admin.api import QueueView
from postroom.admin.http import AdminServer
from postroom.admin.password import read_password_hash
from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator
from postroom.auth.passwords import verify_password
from postroom.auth.sasl import MECHANISMS
from postroom.auth.throttle import LoginThrottle, ThrottleSettings
from postroom.config.diff import compare
from postroom.config.load import ConfigError
from postroom.config.schema import Config
from postroom.delivery.bounce import Bouncer
from postroom.delivery.dkim_keys import DkimKeys
from postroom.delivery.dkim_sign import DkimSigner
from postroom.delivery.mta_sts import MtaSts
from postroom.delivery.remote import RemoteCourier
from postroom.delivery.router import Router
from postroom.delivery.scheduler import Scheduler
from postroom.dns import DnsError, DnsResolver, Resolver
from postroom.dns.deliverability import domain_findings
from postroom.mailbox.maildir import Maildirs
from postroom.observe.log import Logger
from postroom.observe.maillog import MailLog
from postroom.observe.metrics import Metrics
from postroom.policy.connect import AccessLists, ListFileError
from postroom.policy.dnsbl import DnsblChecker
from postroom.policy.limits import RateLimits
from postroom.policy.limitstore import LimitStore
from postroom.policy.sender_auth import SenderAuth
from postroom.queue import Queue
from postroom.server.admission import FrontDoor
from postroom.server.limits import ConnectionLimits
from postroom.server.listener import SmtpListener
from postroom.server.session import SessionServices
from postroom.server.tls import CertificatePair, ensure_certificate, server_context
from postroom.smtp.server import ServerSettings
from postroom.store.sqlite import open_database

__all__ = ["LISTEN_FILE", "App", "open_accounts", "running_app", "serve_forever"]

# What a config reload (SIGHUP) applies to new sessions and checks; any other change waits for a restart.
LIVE_CONFIG_KEYS = (
    "smtp.relay_networks", "smtp.command_timeout", "smtp.data_timeout", "smtp.max_connections",
    "smtp.max_connections_per_ip", "smtp.max_message_size", "smtp.max_recipients", "smtp.max_errors",
    "smtp.long_lines", "smtp.bare_line_endings", "smtp.shutdown_grace", "tls", "local", "policy", "limits",
    "greylist", "sender_auth", "log.level",
)  # fmt: skip


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
    config_loader: Callable[[], Config] | None = None  # SIGHUP reads the config file again with it; None: no

    def __post_init__(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._dns: Resolver | None = None  # one resolver (and one DNS cache) for every room
        self.queue = Queue(
            settings=config.queue,
            queue_dir=config.queue_dir,
            database_path=config.database_path,
            clock=self.clock,
            log=self.log.bind(room="queue"),
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
            resolver=self._resolver(),
            hostname=config.hostname,
            spool_path=self.queue.spool_path,
            log=delivery_log,
            signer=self.dkim_signer,
            mta_sts=self._mta_sts(delivery_log),
        )
        self.scheduler = Scheduler(
            queue=self.queue,
            maildirs=Maildirs(config.mailboxes_dir),
            settings=config.delivery,
            log=delivery_log,
            router=(router := Router(local_domains=config.local.domains, remote=remote)),
            bouncer=(bouncer := Bouncer(
                queue=self.queue,
                hostname=config.hostname,
                local_domains=config.local.domains,
                clock=self.clock,
                log=delivery_log,
            )),
        )
        self._routing = (router, bouncer)  # told of new [local] domains on reload
        self._db: sqlite3.Connection | None = None
        self._throttle_db: sqlite3.Connection | None = None
        self._limit_dbs: list[sqlite3.Connection] = []
        self.rate_limits: RateLimits | None = None
        self._tls: ssl.SSLContext | None = None
        self._authenticator: Authenticator | None = None
        self.certificate: CertificatePair | None = None
        self.access_lists: AccessLists | None = None  # [policy] allow/deny, read again on SIGHUP
        self.admin: AdminServer | None = None  # the HTTP listener: dashboard, API, /metrics

    def _rate_limits(self) -> RateLimits:
        """Rate limits and greylisting over two connections of their own: batches are written from a worker
        thread (synchronous=NORMAL: a power cut may lose the last batch, never corrupt), reads on the loop."""
        self._limit_dbs = [open_database(self.config.database_path, durable=False) for _ in range(2)]
        return RateLimits(
            settings=self.config.limits,
            greylist=self.config.greylist,
            relay_networks=self.config.smtp.relay_networks,
            store=LimitStore(writer=self._limit_dbs[0], reader=self._limit_dbs[1]),
            clock=self.clock,
            log=self.log.bind(room="policy"),
        )

    def _resolver(self) -> Resolver | None:
        """The shared DNS resolver; None (remote mail waits, checks fail open; logged) if it cannot be."""
        if self._dns is None:
            try:
                self._dns = DnsResolver(settings=self.config.dns)
            except DnsError as exc:
                self.log.warning("dns.unavailable", error=str(exc))
        return self._dns

    def _mta_sts(self, log: Logger) -> MtaSts | None:
        """MTA-STS policies for remote delivery ([delivery] mta_sts), cached in the data folder."""
        settings, resolver = self.config.delivery, self._resolver()
        if not settings.mta_sts or resolver is None:
            return None
        return MtaSts(
            resolver=resolver,
            cache_file=self.config.data_dir / "mta-sts.json",
            clock=self.clock,
            log=log,
            port=settings.mta_sts_port,
            ca_file=settings.tls_ca_file,
        )

    def _sender_auth(self) -> SenderAuth | None:
        """SPF, DKIM and DMARC for the MX listener ([sender_auth]); None when off or without a resolver."""
        if not self.config.sender_auth.enabled:
            return None
        resolver = self._resolver()
        if resolver is None:
            return None
        return SenderAuth(settings=self.config.sender_auth, resolver=resolver, hostname=self.config.hostname)

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
        throttle = LoginThrottle(db=self._throttle_db, settings=ThrottleSettings.from_config(config.auth))
        self._authenticator = Authenticator(
            accounts=accounts,
            throttle=throttle,
            clock=self.clock,
            scram_iterations=config.auth.scram_iterations,
        )
        rate_limits = self.rate_limits = self._rate_limits()
        await rate_limits.start()
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
            rate_limits=rate_limits,
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
            SmtpListener(
                name="smtp",
                addresses=smtp.listen,
                services=dataclasses.replace(common, sender_auth=self._sender_auth()),
            ),
            SmtpListener(name="submission", addresses=config.submission.listen, services=submission),
            SmtpListener(
                name="submissions", addresses=config.submissions.listen, services=implicit, implicit_tls=tls
            ),
        ]
        self._open_front_doors()
        for listener in self.listeners:
            await listener.start()
        await self.scheduler.start()
        if config.admin.listen:
            self.admin = self._admin_server()
            await self.admin.start()
        self.log.info(
            "server.started",
            **{
                item.name: " ".join(f"{h}:{p}" for h, p in item.bound)
                for item in self.listeners
                if item.bound
            },
        )

    def _admin_server(self) -> AdminServer:
        """The admin HTTP listener; metrics and the dashboard's activity are fed by every log event."""
        config = self.config
        metrics, activity = Metrics(), Activity(clock=self.clock)
        self.log.add_listener(metrics.observe)
        self.log.add_listener(activity.observe)

        def verify(password: str) -> bool | None:  # read each time: `postroom admin passwd` needs no restart
            password_hash = read_password_hash(config)
            if password_hash is None:
                return None
            return bool(password) and verify_password(password_hash, password)

        return AdminServer(
            settings=config.admin,
            metrics=metrics,
            activity=activity,
            queue=QueueView(database_path=config.database_path, queue_dir=config.queue_dir, clock=self.clock),
            verify=verify,
            log=self.log.bind(room="admin"),
            clock=self.clock,
            checks=self._deliverability_checks,
        )

    async def _deliverability_checks(self) -> list[dict[str, Any]]:
        """The DNS half of `postroom check`, for the dashboard: MX, SPF, DKIM, DMARC of our domains; PTR."""
        config, resolver = self.config, self._resolver()
        if resolver is None:
            return [{"status": "FAIL", "check": "dns", "subject": "resolver", "message": "no DNS resolver"}]
        keys = DkimKeys(config.dkim_dir, selector=config.dkim.selector)
        found = await domain_findings(
            resolver,
            hostname=config.hostname,
            domains=config.local.domains,
            ip=None,
            dkim_for=keys.expectation,
        )
        return [dataclasses.asdict(finding) for finding in found]

    def _open_front_doors(self) -> None:
        """[policy]: allow/deny lists, DNSBL/DNSWL, PROXY and greet delay, in front of every listener."""
        policy = self.config.policy
        try:
            self.access_lists = AccessLists(
                settings=policy,
                base_dir=self.config.data_dir,
                listeners=[item.name for item in self.listeners],
            )
        except ListFileError as exc:
            raise ConfigError(f"policy: {exc}") from None
        resolver = self._resolver() if policy.dnsbl or policy.dnswl else None
        dnsbl = None
        if resolver is not None:
            dnsbl = DnsblChecker(
                resolver=resolver,
                blocklists=policy.dnsbl,
                allowlists=policy.dnswl,
                timeout=policy.dnsbl_timeout,
                cache_seconds=policy.dnsbl_cache,
                clock=self.clock,
                log=self.log.bind(room="policy"),
            )
        for listener in self.listeners:
            listener.set_front_door(
                FrontDoor(
                    access=self.access_lists,
                    table=policy.listener(listener.name),
                    dnsbl=dnsbl if listener.name in policy.dnsbl_listeners else None,
                    dnsbl_reject=policy.dnsbl_reject,
                    proxy_timeout=policy.proxy_timeout,
                )
            )

    def _reload_access_lists(self) -> None:
        """SIGHUP: read [policy] allow_file and deny_file again; on an error the lists in use stay."""
        lists = self.access_lists
        if lists is None or not lists.files:
            return
        try:
            lists.reload()
        except ListFileError as exc:
            self.log.warning("policy.reload_failed", error=str(exc))
            return
        self.log.info("policy.reloaded", files=" ".join(str(path) for path in lists.files))

    def _reload_config(self) -> None:
        """SIGHUP: read the config file again; what LIVE_CONFIG_KEYS name reaches the sessions made from now
        on (rates and connection caps: every session's next check), the rest is logged as waiting for a
        restart. An invalid file is logged and the config in use stays."""
        if self.config_loader is None or self._db is None:  # no file, or not started
            return
        old = self.config
        try:
            change = compare(old, self.config_loader(), live=LIVE_CONFIG_KEYS)
            self.config = config = change.config
            if any(key.startswith("policy.") for key in change.live):
                self._open_front_doors()  # reads the list files: on an error the old doors stay
        except ConfigError as exc:
            self.config = old
            # The operator's mistake, worded by ConfigError (the key and what is wrong): no traceback.
            self.log.error("config.reload_failed", error=str(exc))  # noqa: TRY400
            return
        if "log.level" in change.live:
            self.log.set_level(config.log.level)
        if self.rate_limits is not None:
            self.rate_limits.update(
                settings=config.limits, greylist=config.greylist, relay_networks=config.smtp.relay_networks
            )
        changed = {key.split(".")[0] for key in change.live}
        if "tls" in changed:  # the certificate reload below loads the new pair
            self.certificate = ensure_certificate(
                cert_file=config.tls.cert_file,
                key_file=config.tls.key_file,
                data_dir=config.data_dir,
                hostname=config.hostname,
            )
        local = config.local
        accounts = Accounts(db=self._db, domains=local.domains, plus_separator=local.plus_separator)
        for routing in self._routing:
            routing.set_local_domains(local.domains)
        sender_auth = self._sender_auth() if "sender_auth" in changed else None
        for listener in self.listeners:
            services = listener.services.with_smtp(config.smtp)
            services.limits.update(
                max_total=config.smtp.max_connections, max_per_ip=config.smtp.max_connections_per_ip
            )
            if "local" in changed:
                services = dataclasses.replace(services, accounts=accounts)
            if "sender_auth" in changed and listener.name == "smtp":
                services = dataclasses.replace(services, sender_auth=sender_auth)
            listener.set_services(services)
        self.log.info("config.reloaded", changed=",".join(change.live) or "none")
        if change.restart:
            self.log.warning("config.restart_needed", keys=",".join(change.restart))

    def reload(self) -> bool:
        """SIGHUP: the config file (above), then the certificate files again (new TLS connections use them;
        open ones go on). On any error the old certificate stays in use and the error is logged. DKIM keys
        and the [policy] list files are read again, and the log file is opened again."""
        self._reload_config()
        self._reload_access_lists()
        self.dkim_signer.reload()
        try:
            self.log.reopen()  # logrotate moved the log file away: write to a new one by that name
        except OSError as exc:
            self.log.warning("log.reopen_failed", error=str(exc))
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
async def running_app(
    config: Config, *, log: Logger | None = None, config_loader: Callable[[], Config] | None = None
) -> AsyncIterator[App]:
    """Start an App and yield it once every listener is bound; stop it on the way out."""
    app = App(
        config=config,
        log=log or Logger(level=config.log.level, fmt=config.log.format),
        config_loader=config_loader,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def serve_forever(
    config: Config,
    *,
    log: Logger,
    on_ready: Callable[[App], None],
    config_loader: Callable[[], Config] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads (``config_loader`` reads)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pid_file = config.data_dir / "postroom.pid"
    async with running_app(config, log=log, config_loader=config_loader) as app:
        loop.add_signal_handler(signal.SIGHUP, app.reload)
        listen_file = config.data_dir / LISTEN_FILE
        _write_listen_file(listen_file, app)  # for `postroom sendmail`: where the running server listens
        pid_file.write_text(f"{os.getpid()}\n")  # for `postroom reload`
        try:
            on_ready(app)
            await stop.wait()
            log.info("server.stopping", reason="signal")
        finally:
            pid_file.unlink(missing_ok=True)
            listen_file.unlink(missing_ok=True)


LISTEN_FILE = "postroom.listen"


def _write_listen_file(path: os.PathLike[str], app: App) -> None:
    """One line per bound address, "name host:port" (ports as bound, so port 0 in the config works)."""
    lines = [f"{item.name} {host}:{port}\n" for item in app.listeners for host, port in item.bound]
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "w") as file:
        file.writelines(lines)
    os.replace(temporary, path)
