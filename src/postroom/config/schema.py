"""Frozen dataclasses, one per config section; defaults are the embedded defaults. No file reading here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "AdminSettings",
    "AuthSettings",
    "Config",
    "DeliverySettings",
    "DkimSettings",
    "DnsSettings",
    "GreylistSettings",
    "LimitsSettings",
    "ListenAddress",
    "ListenerPolicy",
    "LocalSettings",
    "LogSettings",
    "PolicySettings",
    "QueueSettings",
    "SenderAuthSettings",
    "SmtpSettings",
    "SubmissionSettings",
    "TlsSettings",
]


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """host:port to bind; port 0 asks the kernel for a free port (tests)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """[smtp]: the MX listener (port 25 in production) and the limits every SMTP session obeys."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 2525),)
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    command_timeout: float = 300.0  # RFC 5321 4.5.3.2.7: deadline for one whole command line
    data_timeout: float = 180.0  # RFC 5321 4.5.3.2.5: longest wait for the next block of data
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    max_message_size: int = 52_428_800  # 50 MiB, advertised in SIZE
    max_recipients: int = 1000  # RFC 5321 4.5.3.1.8: at least 100
    max_errors: int = 10  # protocol errors in one session before 421 and close
    long_lines: Literal["reject", "accept"] = "reject"  # text lines over 1000 octets (RFC 5321 4.5.3.1.6)
    bare_line_endings: Literal["reject", "normalize"] = "reject"  # bare CR or LF in DATA
    shutdown_grace: float = 10.0  # seconds sessions may finish on SIGTERM


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmissionSettings:
    """[submission] (STARTTLS, port 587 style) and [submissions] (implicit TLS, port 465 style)."""

    listen: tuple[ListenAddress, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """[tls]: certificate and key (PEM). Empty: a self-signed pair is made in data_dir on first start."""

    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSettings:
    """[local]: the domains whose mail we keep in local mailboxes."""

    domains: tuple[str, ...] = ("localhost",)
    plus_separator: str = "+"  # user+tag@ delivers to user@; empty turns it off


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsSettings:
    """[dns]: nameservers as (host, port); empty means the system's resolv.conf."""

    nameservers: tuple[tuple[str, int], ...] = ()
    timeout: float = 5.0
    cache_size: int = 10_000  # answers kept until their TTL ends (negative ones too, by the SOA); 0: none


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """[queue]: the durable queue and its retry schedule."""

    retry_schedule: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0)  # then the last
    max_lifetime: float = 5 * 24 * 3600.0
    claim_lease: float = 600.0  # a claimed recipient is retried after this if its worker died
    commit_max_batch: int = 256  # messages made durable by one group commit at most
    inline_max: int = 32_768  # bodies up to this size are committed inside the index (no spool file)
    commit_process: bool = True  # make messages durable in a process of its own (queue/committer.py)
    delay_warning: float = 4 * 3600.0  # seconds in the queue before a delay warning DSN (RFC 3464); 0 = off


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """[delivery]: how queued work leaves."""

    smtp_port: int = 25
    concurrency: int = 8  # local deliveries running at once (worker threads)
    poll_interval: float = 5.0  # seconds between looks at the queue when nothing wakes the scheduler
    gather: float = 0.0  # seconds a round that delivered waits before claiming again (acceptance first)
    own_process: bool = True  # the scheduler and deliveries run in a process of their own (app/workers.py)
    max_connections: int = 50  # outbound SMTP connections open at once, in total
    max_connections_per_domain: int = 5  # ... and to one destination domain
    max_messages_per_connection: int = 100  # messages one connection carries (RSET between) before QUIT
    connection_idle: float = 5.0  # seconds an unused connection is kept for the next message; 0 = no reuse
    relay_host: str = ""  # "host:port": a smarthost that takes all remote mail (no MX lookup); "" = off
    relay_user: str = ""  # AUTH to the smarthost as this user (then STARTTLS with a verified certificate)
    relay_password_file: Path | None = None  # the password for relay_user, first line of this file
    connect_timeout: float = 30.0  # seconds to connect to one MX address and read its greeting
    command_timeout: float = 300.0  # seconds to wait for any one reply (RFC 5321 4.5.3.2: 2 to 10 min)
    max_received: int = 50  # more Received: headers than this is a mail loop: bounced with 5.4.6
    require_tls: tuple[str, ...] = ()  # domains whose MX must offer STARTTLS with a verified certificate
    tls_ca_file: Path | None = None  # CA bundle (PEM) for require_tls; empty: the system's CAs
    mta_sts: bool = True  # honour recipient domains' MTA-STS policies (RFC 8461)
    mta_sts_port: int = 443  # HTTPS port of mta-sts.<domain> (443; tests use another)


@dataclass(frozen=True, slots=True, kw_only=True)
class DkimSettings:
    """[dkim]: DKIM signing of outbound mail (RFC 6376) with the keys in <data_dir>/dkim/<domain>/."""

    sign: bool = True  # sign remote deliveries whose From: (or envelope sender) domain has a key
    selector: str = "postroom"  # the key signed with: <data_dir>/dkim/<domain>/<selector>.pem
    algorithm: Literal["rsa", "ed25519"] = "rsa"  # what `postroom dkim keygen` makes unless told
    rsa_bits: int = 2048
    canonicalization: Literal["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"] = (
        "relaxed/relaxed"
    )
    headers: tuple[str, ...] = (  # signed once for each time they occur (RFC 6376 5.4.1)
        "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "in-reply-to",
        "references", "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "list-id", "list-unsubscribe", "list-unsubscribe-post",
    )  # fmt: skip
    oversign: tuple[str, ...] = ("from",)  # signed once more, so that no copy can be added (5.4.2)


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderAuthSettings:
    """[sender_auth]: SPF, DKIM and DMARC checks of inbound mail on the MX listener ([smtp] only)."""

    enabled: bool = True  # check, and add an Authentication-Results header to every message
    dmarc_reject: bool = True  # honour p=reject: 550 5.7.1 at end of data
    quarantine: Literal["header", "junk"] = "header"  # p=quarantine: deliver as is, or into Junk (.Junk)
    reject_spf_fail: bool = False  # SPF "fail" (-all) for MAIL FROM: 550 5.7.23 at end of data
    reject_ehlo_impersonation: bool = False  # EHLO as our hostname or a foreign IP literal: 550 at MAIL
    dkim_max_size: int = 10_485_760  # larger messages are not DKIM-verified (dkim=none, with the reason)
    dkim_max_signatures: int = 10  # signatures verified per message at most
    dkim_min_key_bits: int = 1024  # shorter RSA keys give dkim=permerror (RFC 8301)
    exempt_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )  # clients not checked (this host's own programs); AUTH users and relay_networks never are


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """[auth]: brute-force protection for SMTP AUTH, per client IP and per account (kept across restarts)."""

    throttle_free_failures: int = 3  # failed logins answered at once
    throttle_max_delay: float = 8.0  # then 1, 2, 4 ... seconds before each answer, up to this
    throttle_lockout_failures: int = 10  # from here on refused with 454 4.7.0 ...
    throttle_window: float = 900.0  # ... until this many seconds passed since the last failure
    # SCRAM-SHA-256 (RFC 7677): PBKDF2 rounds for secrets made when a password is set. The stored keys are
    # only as hard to crack as this count (OWASP 2023: 600,000 for PBKDF2-HMAC-SHA256); each client pays it
    # once per login (about 0.15 s). 4096 (RFC 7677's floor) .. 10,000,000.
    scram_iterations: int = 600_000


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    """[admin]: dashboard, JSON API and /metrics. An empty ``listen`` turns the admin listener off."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8025),)
    password_hash: str = ""  # argon2id hash ("$argon2id$..."); empty: the one in password_file
    password_file: Path | None = None  # file holding the hash; None: <data_dir>/admin-password
    session_lifetime: float = 12 * 3600.0  # seconds a dashboard login lasts


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """[log]: level and format of the structured log on stderr, and the log file (JSON lines, always)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    file: Path | None = None  # None: <data_dir>/postroom.log; a relative path is relative to data_dir


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerPolicy:
    """[policy.smtp], [policy.submission], [policy.submissions]: one listener's own front door."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # added to [policy] allow
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # added to [policy] deny
    proxy_protocol: bool = False  # every connection starts with a PROXY v1/v2 header (HAProxy)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # who may send it
    greet_delay: float = 0.0  # seconds before the 220; a client talking first is refused (postscreen)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """[policy]: who may connect: allow and deny lists, DNSBL/DNSWL zones; per-listener tables below."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # skip DNSBL and greet delay
    deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # 554 5.7.1 at connect
    allow_file: Path | None = None  # more allow entries, one per line; read again on SIGHUP
    deny_file: Path | None = None  # more deny entries, one per line; read again on SIGHUP
    dnsbl: tuple[str, ...] = ()  # DNS block list zones, e.g. "zen.spamhaus.org"
    dnswl: tuple[str, ...] = ()  # DNS allow list zones: a listed client skips the DNSBL
    dnsbl_listeners: tuple[str, ...] = ("smtp",)  # where the zones are asked (not submission: MUAs)
    dnsbl_reject: Literal["connect", "rcpt"] = "connect"  # where a listed client is refused (554 5.7.1)
    dnsbl_timeout: float = 5.0  # seconds for all DNSBL/DNSWL lookups of a connection; then "not listed"
    dnsbl_cache: float = 300.0  # seconds a lookup result is kept
    proxy_timeout: float = 10.0  # seconds a PROXY listener waits for the header
    smtp: ListenerPolicy = field(default_factory=ListenerPolicy)
    submission: ListenerPolicy = field(default_factory=ListenerPolicy)
    submissions: ListenerPolicy = field(default_factory=ListenerPolicy)

    def listener(self, name: str) -> ListenerPolicy:
        """The table of the listener called ``name`` ("smtp", "submission", "submissions")."""
        table: ListenerPolicy = getattr(self, name)
        return table


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitsSettings:
    """[limits]: rates per client IP, sender and user (0 turns one off); counted in the database."""

    connections_per_minute: int = 60  # new connections from one client IP; beyond: 421 4.7.0
    messages_per_connection: int = 1000  # like Exim's smtp_accept_max_per_connection; beyond: 421 4.7.0
    recipients_per_hour: int = 1000  # per envelope sender, or per authenticated user; beyond: 451 4.7.1
    bytes_per_hour: int = 1_073_741_824  # message bytes per authenticated user (1 GiB); beyond: 451 4.7.1
    exempt_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )  # no per-IP or per-sender rates without AUTH (like Postfix's event limit exceptions = mynetworks)
    flush_interval: float = 5.0  # seconds between writes of the counters (a crash forgets at most this)


@dataclass(frozen=True, slots=True, kw_only=True)
class GreylistSettings:
    """[greylist]: first-time (client /24 or /64, sender, recipient) triplets get 451 4.7.1 for a while."""

    enabled: bool = False
    delay: float = 300.0  # seconds before a retry of a new triplet is accepted
    unconfirmed_ttl: float = 14_400.0  # a triplet not retried within 4 hours starts over
    confirmed_ttl: float = 3_110_400.0  # a passed triplet is remembered for 36 days after its last use
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()  # never greylisted
    allow_domains: tuple[str, ...] = ()  # recipient domains never greylisted


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration."""

    hostname: str = "localhost"
    data_dir: Path = Path("postroom-data")
    workers: int = 1  # server processes sharing the listeners and the queue; 0 = one per CPU core (max 15)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    submission: SubmissionSettings = field(
        default_factory=lambda: SubmissionSettings(listen=(ListenAddress("127.0.0.1", 2587),))
    )
    submissions: SubmissionSettings = field(
        default_factory=lambda: SubmissionSettings(listen=(ListenAddress("127.0.0.1", 2465),))
    )
    tls: TlsSettings = field(default_factory=TlsSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    sender_auth: SenderAuthSettings = field(default_factory=SenderAuthSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    greylist: GreylistSettings = field(default_factory=GreylistSettings)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "postroom.db"

    @property
    def log_file(self) -> Path:
        """Where every log line goes as JSON (``postroom trace`` reads it back)."""
        return self.data_dir / (self.log.file or "postroom.log")

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def dkim_dir(self) -> Path:
        """DKIM signing keys: <dkim_dir>/<domain>/<selector>.pem."""
        return self.data_dir / "dkim"

    @property
    def mailboxes_dir(self) -> Path:
        return self.data_dir / "mailboxes"
