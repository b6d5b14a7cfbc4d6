"""What a listener's front door checks (FrontDoor, built by app.py) and what it found out about one
connection before the greeting (Admission, handed to the session). Plain values; the gate does the work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from postroom.config.schema import ListenerPolicy
from postroom.policy.connect import AccessLists
from postroom.policy.dnsbl import DnsblChecker
from postroom.smtp.types import Reply

__all__ = ["Admission", "FrontDoor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontDoor:
    """One listener's connection checks: lists, DNSBL (None: not asked here), PROXY, greet delay."""

    access: AccessLists
    table: ListenerPolicy
    dnsbl: DnsblChecker | None = None
    dnsbl_reject: Literal["connect", "rcpt"] = "connect"
    proxy_timeout: float = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """A connection let in: the real client address (after any PROXY header) and what to refuse later."""

    client_ip: str
    proxy_ip: str | None = None  # the load balancer that told us ``client_ip``
    allowlisted: bool = False
    rcpt_refusal: Reply | None = None  # DNSBL listing with dnsbl_reject = "rcpt": every RCPT gets this
