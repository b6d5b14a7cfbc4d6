"""Builds the parts of a running server from the Config: accounts, rate limits, listeners and their
sessions' services, front doors, the admin server. Builds only; the App starts, stops and reloads them."""

from __future__ import annotations

import dataclasses
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from postroom.admin.activity import Activity
from postroom.admin.api import QueueView
from postroom.admin.http import AdminServer
from postroom.admin.password import read_password_hash
from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator
from postroom.auth.passwords import verify_password
from postroom.auth.sasl import MECHANISMS
from postroom.config.load import ConfigError
from postroom.config.schema import Config, ListenAddress
from postroom.delivery.dkim_keys import DkimKeys
from postroom.delivery.mta_sts import MtaSts
from postroom.dns import Resolver
from postroom.dns.deliverability import domain_findings
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
from postroom.smtp.server import ServerSettings
from postroom.store.sqlite import open_database

__all__ = [
    "admin_server",
    "deliverability_checks",
    "front_doors",
    "listen_addresses",
    "listeners",
    "mta_sts",
    "open_accounts",
    "rate_limits",
    "sender_auth",
]


def open_accounts(config: Config) -> tuple[Accounts, sqlite3.Connection]:
    """Accounts over a database connection of their own (the caller closes it)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(config.database_path)
    return Accounts(db=db, domains=config.local.domains, plus_separator=config.local.plus_separator), db


def rate_limits(
    config: Config, *, clock: Callable[[], float], log: Logger
) -> tuple[RateLimits, list[sqlite3.Connection]]:
    """Rate limits and greylisting over two connections of their own (returned for the caller to close):
    batches are written from a worker thread (synchronous=NORMAL: a power cut may lose the last batch, never
    corrupt), reads on the loop."""
    dbs = [open_database(config.database_path, durable=False) for _ in range(2)]
    limits = RateLimits(
        settings=config.limits,
        greylist=config.greylist,
        relay_networks=config.smtp.relay_networks,
        store=LimitStore(writer=dbs[0], reader=dbs[1]),
        clock=clock,
        log=log.bind(room="policy"),
    )
    return limits, dbs


def mta_sts(
    config: Config, resolver: Resolver | None, *, clock: Callable[[], float], log: Logger
) -> MtaSts | None:
    """MTA-STS policies for remote delivery ([delivery] mta_sts), cached in the data folder."""
    settings = config.delivery
    if not settings.mta_sts or resolver is None:
        return None
    return MtaSts(
        resolver=resolver,
        cache_file=config.data_dir / "mta-sts.json",
        clock=clock,
        log=log,
        port=settings.mta_sts_port,
        ca_file=settings.tls_ca_file,
    )


def sender_auth(config: Config, resolver: Callable[[], Resolver | None]) -> SenderAuth | None:
    """SPF, DKIM and DMARC for the MX listener ([sender_auth]); None when off or without a resolver."""
    if not config.sender_auth.enabled:
        return None
    found = resolver()
    if found is None:
        return None
    return SenderAuth(settings=config.sender_auth, resolver=found, hostname=config.hostname)


def listeners(
    config: Config,
    *,
    queue: Queue,
    accounts: Accounts,
    authenticator: Authenticator,
    tls: ssl.SSLContext,
    limits: RateLimits,
    mx_sender_auth: SenderAuth | None,
    clock: Callable[[], float],
    log: Logger,
    workers: int = 1,
) -> list[SmtpListener]:
    """The three SMTP listeners (not started): MX, submission (STARTTLS + AUTH), implicit TLS submission.
    With several ``workers`` each one's connection caps are its share of [smtp]'s (server/limits.py)."""
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
        queue=queue,
        accounts=accounts,
        limits=ConnectionLimits(
            max_total=smtp.max_connections, max_per_ip=smtp.max_connections_per_ip, shares=workers
        ),
        maillog=MailLog(log.bind(room="smtp")),
        log=log.bind(room="smtp"),
        clock=clock,
        tls_context=tls,
        rate_limits=limits,
    )
    submission = dataclasses.replace(
        common,
        protocol=dataclasses.replace(common.protocol, auth_mechanisms=MECHANISMS),
        authenticator=authenticator,
        require_auth=True,
    )
    implicit = dataclasses.replace(
        submission,
        protocol=dataclasses.replace(submission.protocol, starttls=False, implicit_tls=True),
        tls_context=None,
    )
    addresses = listen_addresses(config)
    return [
        SmtpListener(
            name="smtp",
            addresses=addresses["smtp"],
            services=dataclasses.replace(common, sender_auth=mx_sender_auth),
        ),
        SmtpListener(name="submission", addresses=addresses["submission"], services=submission),
        SmtpListener(
            name="submissions", addresses=addresses["submissions"], services=implicit, implicit_tls=tls
        ),
    ]


def listen_addresses(config: Config) -> dict[str, tuple[ListenAddress, ...]]:
    """Each SMTP listener's name and the addresses it binds."""
    return {
        "smtp": config.smtp.listen,
        "submission": config.submission.listen,
        "submissions": config.submissions.listen,
    }


def front_doors(
    config: Config,
    listening: list[SmtpListener],
    *,
    resolver: Callable[[], Resolver | None],
    clock: Callable[[], float],
    log: Logger,
) -> AccessLists:
    """[policy]: allow/deny lists, DNSBL/DNSWL, PROXY and greet delay, set in front of every listener.
    Raises ConfigError when a list file cannot be read (the doors in place stay)."""
    policy = config.policy
    try:
        access = AccessLists(
            settings=policy, base_dir=config.data_dir, listeners=[item.name for item in listening]
        )
    except ListFileError as exc:
        raise ConfigError(f"policy: {exc}") from None
    found = resolver() if policy.dnsbl or policy.dnswl else None
    dnsbl = None
    if found is not None:
        dnsbl = DnsblChecker(
            resolver=found,
            blocklists=policy.dnsbl,
            allowlists=policy.dnswl,
            timeout=policy.dnsbl_timeout,
            cache_seconds=policy.dnsbl_cache,
            clock=clock,
            log=log.bind(room="policy"),
        )
    for listener in listening:
        listener.set_front_door(
            FrontDoor(
                access=access,
                table=policy.listener(listener.name),
                dnsbl=dnsbl if listener.name in policy.dnsbl_listeners else None,
                dnsbl_reject=policy.dnsbl_reject,
                proxy_timeout=policy.proxy_timeout,
            )
        )
    return access


def admin_server(
    config: Config,
    *,
    clock: Callable[[], float],
    log: Logger,
    checks: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> AdminServer:
    """The admin HTTP listener; metrics and the dashboard's activity are fed by every log event."""
    metrics, activity = Metrics(), Activity(clock=clock)
    log.add_listener(metrics.observe)
    log.add_listener(activity.observe)

    def verify(password: str) -> bool | None:  # read each time: `postroom admin passwd` needs no restart
        password_hash = read_password_hash(config)
        if password_hash is None:
            return None
        return bool(password) and verify_password(password_hash, password)

    return AdminServer(
        settings=config.admin,
        metrics=metrics,
        activity=activity,
        queue=QueueView(database_path=config.database_path, queue_dir=config.queue_dir, clock=clock),
        verify=verify,
        log=log.bind(room="admin"),
        clock=clock,
        checks=checks,
    )


async def deliverability_checks(config: Config, resolver: Resolver | None) -> list[dict[str, Any]]:
    """The DNS half of `postroom check`, for the dashboard: MX, SPF, DKIM, DMARC of our domains; PTR."""
    if resolver is None:
        return [{"status": "FAIL", "check": "dns", "subject": "resolver", "message": "no DNS resolver"}]
    keys = DkimKeys(config.dkim_dir, selector=config.dkim.selector)
    found = await domain_findings(
        resolver, hostname=config.hostname, domains=config.local.domains, ip=None, dkim_for=keys.expectation
    )
    return [dataclasses.asdict(finding) for finding in found]
