"""Who the client is and how the line is protected: the STARTTLS upgrade (RFC 3207) and the AUTH exchanges
(RFC 4954: PLAIN, LOGIN, SCRAM-SHA-256) checked through the authenticator and its brute-force throttle.

It turns SASL steps into replies and logs each outcome (never a password or an AUTH payload); it does not
speak SASL itself (auth/sasl.py, auth/scram.py) and does not write to the client (the session does).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from typing import Any

from postroom.auth.authenticator import Authenticator, LoginThrottled
from postroom.auth.sasl import (
    Acknowledgement,
    Challenge,
    Credentials,
    SaslExchange,
    ScramProof,
    Step,
    Unsupported,
    Verified,
)
from postroom.observe.log import Logger, sanitize
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Reply

__all__ = ["Login", "TlsUpgrade"]

_HANDSHAKE_TIMEOUT = 30.0  # seconds for the TLS handshake after our 220

# A reply now, or one to wait for (the password check runs off the event loop).
LoginAnswer = Reply | Coroutine[Any, Any, Reply]


class Login:
    """The AUTH state of one connection: ``user`` once a login succeeded, None before (and after STARTTLS)."""

    def __init__(
        self, *, authenticator: Authenticator | None, log: Logger, session_id: str, client_ip: str
    ) -> None:
        self.user: str | None = None  # the authenticated mailbox
        self._authenticator = authenticator
        self._log = log
        self._session_id = session_id
        self._client_ip = client_ip
        self._exchange: SaslExchange | None = None

    def start(self, event: events.Auth) -> LoginAnswer:
        """AUTH <mechanism> [initial response]: a 334 challenge, or the outcome."""
        if self._authenticator is None:  # the protocol offers AUTH only when told to; this is a wiring bug
            raise SmtpError(replies.NOT_IMPLEMENTED, reason="AUTH without an authenticator")
        self._exchange, step = self._authenticator.start_exchange(event.mechanism, event.initial_response)
        return self._step(step)

    def respond(self, event: events.AuthResponse) -> LoginAnswer:
        """The client's answer to our 334."""
        if self._exchange is None:  # pragma: no cover - the protocol only emits responses after our 334
            raise SmtpError(replies.BAD_SEQUENCE, reason="SASL response without an exchange")
        return self._step(self._exchange.step(event.response))

    def forget(self) -> None:
        """RFC 3207 4.2: after the TLS handshake, nothing learnt before it counts."""
        self.user = None

    def _step(self, step: Step) -> LoginAnswer:
        if isinstance(step, Challenge):
            return Reply(334, None, step.text)
        self._exchange = None
        if isinstance(step, Credentials | ScramProof):
            return self._authenticate(step)
        if isinstance(step, Verified):  # the client took SCRAM's server-final message
            return self._logged_in(step.user)
        if isinstance(step, Unsupported):
            raise SmtpError(replies.AUTH_CHANNEL_BINDING, reason=step.reason)
        raise SmtpError(replies.AUTH_RESPONSE_SYNTAX, reason=step.reason)

    async def _authenticate(self, credentials: Credentials | ScramProof) -> Reply:
        authenticator = self._authenticator
        log = self._log
        try:
            user = await authenticator.check(credentials, ip=self._client_ip) if authenticator else None
        except LoginThrottled as exc:
            log.info("auth.throttled", session_id=self._session_id, client=self._client_ip, reason=str(exc))
            return replies.AUTH_THROTTLED
        if user is None:
            log.info(
                "auth.failed",
                session_id=self._session_id,
                client=self._client_ip,
                username=sanitize(credentials.username),
            )
            return replies.AUTH_FAILED
        if isinstance(credentials, ScramProof):  # RFC 4954 4: data with success goes in a 334, then 235
            self._exchange = Acknowledgement(user)
            return Reply(334, None, credentials.server_final)
        return self._logged_in(user)

    def _logged_in(self, user: str) -> Reply:
        self.user = user
        self._log.info("auth.ok", session_id=self._session_id, client=self._client_ip, user=user)
        return replies.AUTH_OK


class TlsUpgrade:
    """One STARTTLS handshake, server side, after our 220. Reading is paused from the start (the
    ClientHello must reach the TLS layer, not the session); decrypted bytes the TLS layer delivers before
    the session resumes (the client's first EHLO) are kept in ``early`` for the session to feed on."""

    def __init__(
        self, *, transport: asyncio.Transport, context: ssl.SSLContext, log: Logger, session_id: str
    ) -> None:
        self.early: list[bytes] = []
        self.failed = False  # the handshake failed (logged; the connection is aborted)
        self._transport = transport
        self._context = context
        self._log = log
        self._session_id = session_id
        transport.pause_reading()

    async def run(self, protocol: asyncio.Protocol) -> asyncio.Transport | None:
        """The TLS transport, or None when the handshake failed or the peer went away during it."""
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport,
                protocol,
                self._context,
                server_side=True,
                ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.failed = True
            self._log.info("tls.failed", session_id=self._session_id, error=str(exc))
            self._transport.abort()
            return None
        if transport is None:  # pragma: no cover - the peer went away during the handshake
            return None
        cipher = transport.get_extra_info("cipher")
        self._log.info(
            "tls.started",
            session_id=self._session_id,
            version=transport.get_extra_info("ssl_object").version() if cipher else "",
            cipher=cipher[0] if cipher else "",
        )
        return transport
