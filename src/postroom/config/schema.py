"""Frozen dataclasses, one per config section; defaults are the embedded defaults. No file reading here."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "AdminSettings",
    "Config",
    "DeliverySettings",
    "DnsSettings",
    "ListenAddress",
    "LocalSettings",
    "LogSettings",
    "QueueSettings",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """[queue]: the durable queue and its retry schedule."""

    retry_schedule: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 4800.0, 9600.0)  # then the last
    max_lifetime: float = 5 * 24 * 3600.0
    claim_lease: float = 600.0  # a claimed recipient is retried after this if its worker died
    commit_max_batch: int = 256  # messages made durable by one group commit at most
    inline_max: int = 32_768  # bodies up to this size are committed inside the index (no spool file)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """[delivery]: how queued work leaves."""

    smtp_port: int = 25
    concurrency: int = 8  # local deliveries running at once (worker threads)
    poll_interval: float = 5.0  # seconds between looks at the queue when nothing wakes the scheduler
    max_connections: int = 50  # outbound SMTP connections open at once, in total
    max_connections_per_domain: int = 5  # ... and to one destination domain
    connect_timeout: float = 30.0  # seconds to connect to one MX address and read its greeting
    command_timeout: float = 300.0  # seconds to wait for any one reply (RFC 5321 4.5.3.2: 2 to 10 min)
    max_received: int = 50  # more Received: headers than this is a mail loop: bounced with 5.4.6
    require_tls: tuple[str, ...] = ()  # domains whose MX must offer STARTTLS with a verified certificate
    tls_ca_file: Path | None = None  # CA bundle (PEM) for require_tls; empty: the system's CAs


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminSettings:
    """[admin]: dashboard and /metrics."""

    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8025),)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogSettings:
    """[log]: level and format of the structured log on stderr."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration."""

    hostname: str = "localhost"
    data_dir: Path = Path("postroom-data")
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
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "postroom.db"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def mailboxes_dir(self) -> Path:
        return self.data_dir / "mailboxes"
