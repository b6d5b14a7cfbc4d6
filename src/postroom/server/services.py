"""SessionServices: everything an SMTP session is given (built per listener by app.py, again on a config
reload: sessions made from then on get the new one). A plain value."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator
from postroom.config.schema import SmtpSettings
from postroom.observe.log import Logger
from postroom.observe.maillog import MailLog
from postroom.policy.limits import RateLimits
from postroom.policy.sender_auth import SenderAuth
from postroom.queue import Queue
from postroom.server.admission import FrontDoor
from postroom.server.limits import ConnectionLimits
from postroom.smtp.server import ServerSettings

__all__ = ["SessionServices"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionServices:
    """Everything a session needs, built once per listener by app.py."""

    hostname: str
    protocol: ServerSettings
    smtp: SmtpSettings
    queue: Queue
    accounts: Accounts
    limits: ConnectionLimits
    maillog: MailLog
    log: Logger
    clock: Callable[[], float]
    tls_context: ssl.SSLContext | None = None  # STARTTLS offered when set (and ServerSettings.starttls)
    authenticator: Authenticator | None = None  # AUTH offered when set
    require_auth: bool = False  # submission: MAIL only after AUTH, and only from the user's own addresses
    front_door: FrontDoor | None = None  # lists, DNSBL, PROXY, greet delay (server/gate.py); None: none
    rate_limits: RateLimits | None = None  # [limits] rates and [greylist] (policy/limits.py); None: off
    sender_auth: SenderAuth | None = None  # MX: SPF, DKIM, DMARC (policy/sender_auth.py); None: off

    def with_smtp(self, smtp: SmtpSettings) -> SessionServices:
        """The same services under new [smtp] limits: timeouts, relay networks and the protocol's sizes."""
        protocol = dataclasses.replace(
            self.protocol,
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            max_errors=smtp.max_errors,
            long_lines=smtp.long_lines,
            bare_line_endings=smtp.bare_line_endings,
        )
        return dataclasses.replace(self, smtp=smtp, protocol=protocol)
