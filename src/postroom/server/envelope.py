"""MAIL and RCPT decisions for one connection: who may send (submission ownership, rates, EHLO
impersonation) and to whom (local recipients, relay permission, greylisting, DNSBL at RCPT, DSN params).

A small object with narrow inputs: it raises SmtpError with the reply for a "no", and returns the queue's
Recipients for a "yes". It keeps no transaction and does no I/O of its own; the session does both.
"""

from __future__ import annotations

import ipaddress

from postroom.auth.accounts import Accounts
from postroom.observe.log import sanitize
from postroom.policy.limits import RateLimits
from postroom.policy.sender_auth import SenderAuth
from postroom.queue import Recipient
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Reply

__all__ = ["EnvelopeRules", "dsn_params"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def dsn_params(event: events.Rcpt) -> tuple[str, str]:
    """NOTIFY and ORCPT (RFC 3461) as the queue keeps them: "SUCCESS,DELAY", "rfc822;user@example.test"."""
    return ",".join(event.notify or ()), "" if event.orcpt is None else ";".join(event.orcpt)


class EnvelopeRules:
    """``check_mail(event, ...)`` and ``recipients(event, ...)`` for the client at ``client_ip``."""

    def __init__(
        self,
        *,
        client_ip: str,
        accounts: Accounts,
        relay_networks: tuple[Network, ...],
        submission: bool = False,  # RFC 6409: MAIL only after AUTH, and only from the user's own addresses
        rate_limits: RateLimits | None = None,  # [limits] rates and [greylist]; None: off
        sender_auth: SenderAuth | None = None,  # for the EHLO impersonation check; None: off
        rcpt_refusal: Reply | None = None,  # the gate's DNSBL listing with dnsbl_reject = "rcpt"
    ) -> None:
        self._client_ip = client_ip
        self._accounts = accounts
        self._relay_networks = relay_networks
        self._submission = submission
        self._rate_limits = rate_limits
        self._sender_auth = sender_auth
        self._rcpt_refusal = rcpt_refusal
        self._trusted_network: bool | None = None  # client in [smtp] relay_networks (worked out once)

    # --- MAIL ---------------------------------------------------------------------------------------------

    def check_mail(self, event: events.Mail, *, user: str | None, helo: str, messages: int) -> None:
        """SmtpError when this MAIL FROM is refused (``messages``: accepted so far on this connection)."""
        if self._submission:
            self._check_sender(event, user)
        if self._rate_limits is not None:
            sender = "" if event.reverse_path is None else str(event.reverse_path)
            refusal = self._rate_limits.mail(
                ip=self._client_ip, sender=sender, user=user, messages=messages, size=event.size
            )
            if refusal is not None:
                raise SmtpError(refusal.reply, reason=refusal.reason)
        sender_auth = self._sender_auth
        if sender_auth is not None and sender_auth.refuses_ehlo(helo, self._client_ip):
            raise SmtpError(replies.EHLO_IMPERSONATION, reason=f"EHLO {sanitize(helo)} impersonation")

    def _check_sender(self, event: events.Mail, user: str | None) -> None:
        """Submission (RFC 6409): only an authenticated user, and only as one of their own addresses."""
        if user is None:
            raise SmtpError(replies.AUTH_REQUIRED, reason="MAIL before AUTH on submission")
        sender = event.reverse_path
        mailboxes = self._accounts.resolve(sender.local_part, sender.domain) if sender is not None else None
        owned = sender is not None and user in (mailboxes or ())
        if not owned:
            raise SmtpError(replies.SENDER_NOT_OWNED, reason=f"{user} may not send as {sender}")

    # --- RCPT ---------------------------------------------------------------------------------------------

    def recipients(self, event: events.Rcpt, *, user: str | None, sender: str | None) -> list[Recipient]:
        """Where mail for this RCPT goes (an alias may give several mailboxes); SmtpError when refused."""
        if self._rcpt_refusal is not None and user is None:  # [policy] dnsbl_reject = "rcpt"
            raise SmtpError(self._rcpt_refusal, reason="client on a DNS block list")
        address = event.forward_path
        if address.domain and not self._accounts.is_local_domain(address.domain):
            recipient = self._remote_recipient(event, user)
            self._check_rate(event, user, sender)
            return [recipient]
        mailboxes = self._accounts.resolve(address.local_part, address.domain)
        if not mailboxes:
            raise SmtpError(replies.NO_SUCH_USER, reason="unknown recipient")
        self._check_rate(event, user, sender)
        rcpt_text = str(address)
        return [Recipient(rcpt_text, mailbox, "local", *dsn_params(event)) for mailbox in mailboxes]

    def _remote_recipient(self, event: events.Rcpt, user: str | None) -> Recipient:
        """Relaying: only for an authenticated user or a client in [smtp] relay_networks (like Postfix's
        permit_sasl_authenticated, permit_mynetworks); never by a source route (RFC 5321 4.1.2, 3.6.1)."""
        address = event.forward_path
        if not self.may_relay(user):
            reply = replies.SOURCE_ROUTE_RELAY_DENIED if event.source_route else replies.RELAY_DENIED
            raise SmtpError(reply, reason=f"relay denied for {address.domain}")
        if address.domain.startswith("["):
            raise SmtpError(replies.RELAY_DENIED, reason="relay to an address literal")
        remote = f"{address.local_part}@{address.domain.lower()}"
        return Recipient(str(address), remote, "smtp", *dsn_params(event))

    def _check_rate(self, event: events.Rcpt, user: str | None, sender: str | None) -> None:
        """Greylisting and the sender's recipients per hour (policy/limits.py)."""
        if self._rate_limits is None or sender is None:
            return
        refusal = self._rate_limits.rcpt(
            ip=self._client_ip, sender=sender, user=user, recipient=str(event.forward_path)
        )
        if refusal is not None:
            raise SmtpError(refusal.reply, reason=refusal.reason)

    def may_relay(self, user: str | None) -> bool:
        """An authenticated user, or a client in [smtp] relay_networks."""
        if user is not None:
            return True
        if self._trusted_network is None:
            try:
                client = ipaddress.ip_address(self._client_ip)
            except ValueError:
                return False
            self._trusted_network = any(client in net for net in self._relay_networks)
        return self._trusted_network
