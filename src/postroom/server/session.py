"""One SMTP session per connection: feeds the socket's bytes to smtp.ServerConnection, answers each event by
asking accounts and the queue, streams the body into a spool file, and writes the replies back.

This is the one place where an SmtpError becomes its reply; anything else raised while answering is a bug:
it is logged with its traceback, the client gets 451 4.3.0, and the session keeps serving.

Replies are gathered while pipelined commands are answered and written in one go when the protocol needs
more bytes (RFC 2920), or before anything that waits (the group commit of a message).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import secrets
import ssl
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from postroom.auth.accounts import Accounts
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
from postroom.config.schema import SmtpSettings
from postroom.observe.log import Logger, sanitize
from postroom.observe.maillog import MailLog
from postroom.policy.limits import RateLimits
from postroom.policy.sender_auth import SenderAuth
from postroom.queue import Envelope, Queue, QueueError, Recipient, SpoolWriter
from postroom.server.admission import Admission, FrontDoor
from postroom.server.headers import HeaderCompleter
from postroom.server.limits import ConnectionLimits
from postroom.server.received import protocol_name, received_header
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.events import NEED_DATA
from postroom.smtp.server import ServerConnection, ServerSettings
from postroom.smtp.types import Reply

__all__ = ["Session", "SessionServices"]

# A reply now, one to wait for (None when the wait ends with nothing to say: STARTTLS), or none at all.
Answer = Reply | Coroutine[Any, Any, Reply | None] | None

_session_numbers = itertools.count(1)


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


def _dsn_params(event: events.Rcpt) -> tuple[str, str]:
    """NOTIFY and ORCPT (RFC 3461) as the queue keeps them: "SUCCESS,DELAY", "rfc822;user@example.test"."""
    return ",".join(event.notify or ()), "" if event.orcpt is None else ";".join(event.orcpt)


class Session(asyncio.Protocol):
    """An asyncio Protocol for one SMTP connection."""

    def __init__(
        self,
        *,
        services: SessionServices,
        listener: str,
        on_close: Callable[[Session], None],
        admission: Admission | None = None,  # from the gate: the real client address, DNSBL at RCPT
    ):
        self._services = services
        self._admission = admission
        self._listener = listener
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self.session_id = f"{secrets.token_hex(3)}{next(_session_numbers):x}"
        self._conn = ServerConnection(settings=services.protocol)
        self._transport: asyncio.Transport | None = None
        self._client_ip = ""
        self._counted = False  # holds a slot in the connection limits
        self._out: list[bytes] = []
        self._busy = False  # waiting (queue, TLS handshake, password check): no pumping meanwhile
        self._closing = False
        self._shutdown_requested = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._last_activity = 0.0
        self._receiving = False  # inside DATA or a BDAT chunk
        self._messages = 0
        self._bytes_in = self._bytes_out = 0  # reported in the close event (metrics)
        self._close_reason = "client closed"
        self._helo = ""
        self._extended = False
        self._sender: str | None = None  # the transaction: MAIL, RCPTs, the spool file of its body
        self._smtputf8 = False
        self._dsn = ("", "")  # RET and ENVID of the transaction's MAIL (RFC 3461)
        self._recipients: list[Recipient] = []
        self._mailboxes: set[str] = set()
        self._spool: SpoolWriter | None = None
        self._completer: HeaderCompleter | None = None  # submission: Date / Message-ID if missing
        self._handlers: dict[type[events.Event], Callable[[Any], Answer]] = {
            events.Ehlo: self._on_ehlo,
            events.Mail: self._on_mail,
            events.Rcpt: self._on_rcpt,
            events.Data: self._on_data,
            events.Bdat: self._on_bdat,
            events.DataChunk: self._on_data_chunk,
            events.Rset: self._on_rset,
            events.EndOfChunk: self._on_chunk_end,
            events.CommandError: self._on_command_error,
            events.StartTls: self._on_starttls,
            events.Auth: self._on_auth,
            events.AuthResponse: self._on_auth_response,
        }
        self._task: asyncio.Task[None] | None = None  # the one wait under way (see _await_reply)
        self._sasl: SaslExchange | None = None
        self._early_tls_data: list[bytes] | None = None  # set while start_tls() is under way
        self._user: str | None = None  # the authenticated mailbox
        self._trusted_network: bool | None = None  # client in [smtp] relay_networks (worked out once)

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self._transport.get_extra_info("peername")
        self._client_ip = str(peer[0]) if peer else "unknown"
        if self._admission is not None:  # the gate read a PROXY header: the client behind the proxy
            self._client_ip = self._admission.client_ip
        if self._shutdown_requested:  # accepted while the listener stopped
            self._close_with(replies.SHUTTING_DOWN, reason="server shutdown")
            return
        if self._refused_by_rate():
            return
        refusal = self._services.limits.acquire(self._client_ip)
        if refusal is not None:
            self._services.maillog.refused_connection(
                client=self._client_ip, listener=self._listener, reply=str(refusal)
            )
            self._close_with(refusal, reason="connection limit")
            return
        self._counted = True
        self._services.maillog.connected(
            session_id=self.session_id, client=self._client_ip, listener=self._listener
        )
        self._out.append(self._conn.send(replies.greeting(self._services.hostname)))
        self._flush()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        if self._closing:
            return
        if self._early_tls_data is not None:
            # Decrypted bytes that the TLS layer delivered right after the handshake, before _upgrade
            # resumed: the client's first EHLO. Fed to the protocol once it knows TLS is on.
            self._early_tls_data.append(data)
            return
        self._last_activity = self._loop.time()
        self._conn.receive_data(data)
        if not self._busy:
            self._pump()

    def eof_received(self) -> bool | None:
        self._close_reason = "client closed"
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._cancel_timer()
        if self._spool is not None and not self._busy:
            self._spool.abort()
            self._spool = None
        if self._counted:
            self._services.limits.release(self._client_ip)
            self._services.maillog.disconnected(
                session_id=self.session_id,
                client=self._client_ip,
                messages=self._messages,
                reason=self._close_reason if exc is None else f"connection error: {exc}",
                listener=self._listener,
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
            )
        self._on_close(self)

    # --- shutdown ----------------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """No transaction under way: closing now loses nothing the client could not simply retry."""
        return not (self._busy or self._receiving or self._spool is not None or self._recipients)

    def request_shutdown(self) -> None:
        """Close when idle: now, or as soon as the current transaction has been answered."""
        self._shutdown_requested = True
        if self._transport is not None and self.idle and not self._closing:
            self._close_with(replies.SHUTTING_DOWN, reason="server shutdown")

    def abort(self) -> None:
        if self._transport is not None:
            self._close_reason = "server shutdown (forced)"
            self._transport.abort()

    # --- the event pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Answer every complete event in the receive buffer, in order."""
        conn = self._conn
        while not self._closing:
            event = conn.next_event()
            if event is NEED_DATA:
                self._flush()
                self._arm_timer()
                return
            if not isinstance(event, events.DataChunk):
                self._cancel_timer()
            if isinstance(event, events.EndOfData | events.EndOfChunk) and (
                isinstance(event, events.EndOfData) or event.last
            ):
                self._finish_message(event)
                return
            reply = self._answer(event)
            if isinstance(reply, Reply):
                self._send(reply)
            elif reply is not None:
                self._await_reply(reply)
                return

    def _answer(self, event: events.Event) -> Answer:
        """The one place an SmtpError becomes a reply; an unexpected error is logged and answered 451."""
        handler = self._handlers.get(type(event))
        try:
            if handler is None:
                return self._conn.default_reply(event)
            return handler(event)
        except SmtpError as exc:
            self._reject(event, exc.reply, exc.reason)
            return exc.reply
        except Exception as exc:
            self._services.log.failure("session.error", exc, session_id=self.session_id)
            return replies.LOCAL_ERROR

    def _send(self, reply: Reply) -> None:
        self._out.append(self._conn.send(reply))
        if self._conn.closed:
            self._close_reason = "server closed" if reply.code != 221 else "quit"
            self._flush()
            self._closing = True
            self._cancel_timer()
            if self._transport is not None:
                self._transport.close()

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            out = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._bytes_out += len(out)
            self._transport.write(out)
        self._out.clear()

    def _close_with(self, reply: Reply, *, reason: str) -> None:
        """Send an unsolicited reply (421 timeout, shutdown, limits) and close, outside the turn-taking."""
        self._flush()
        self._close_reason = reason
        self._closing = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.write(reply.to_bytes())
            self._transport.close()

    # --- timers: RFC 5321 4.5.3.2 ----------------------------------------------------------------

    def _arm_timer(self) -> None:
        """A deadline for the whole next command line (a client dribbling bytes cannot hold us), or an
        inactivity limit while message data flows."""
        if self._receiving:
            if self._timer_kind != "data":
                self._cancel_timer()
                self._timer_kind = "data"
                self._timer = self._loop.call_later(self._services.smtp.data_timeout, self._on_data_timer)
        elif self._timer is None:
            self._timer_kind = "command"
            self._timer = self._loop.call_later(self._services.smtp.command_timeout, self._on_command_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_kind = ""

    def _on_command_timer(self) -> None:
        self._timer = None
        if not self._busy:
            self._close_with(replies.COMMAND_TIMEOUT, reason="command timeout")

    def _on_data_timer(self) -> None:
        self._timer = None
        self._timer_kind = ""
        if self._busy:
            return
        idle_for = self._loop.time() - self._last_activity
        remaining = self._services.smtp.data_timeout - idle_for
        if remaining > 0:
            self._timer_kind = "data"
            self._timer = self._loop.call_later(remaining, self._on_data_timer)
            return
        self._close_with(replies.DATA_TIMEOUT, reason="data timeout")

    # --- handlers: one per event ---------------------------------------------------------------------

    def _reset_transaction(self) -> None:
        self._sender = None
        self._smtputf8 = False
        self._dsn = ("", "")
        self._recipients = []
        self._mailboxes = set()
        self._spool = None
        self._completer = None

    def _abort_transaction(self) -> None:
        if self._spool is not None:
            self._spool.abort()
        self._receiving = False
        self._reset_transaction()

    def _on_ehlo(self, event: events.Ehlo) -> Reply:
        self._abort_transaction()
        self._helo = event.domain
        self._extended = event.extended
        return self._conn.default_reply(event)

    def _on_rset(self, event: events.Rset) -> Reply:
        self._abort_transaction()
        return self._conn.default_reply(event)

    def _on_mail(self, event: events.Mail) -> Reply:
        self._abort_transaction()
        if self._services.require_auth:
            self._check_sender(event)
        self._check_mail_limits(event)
        sender_auth = self._services.sender_auth
        if sender_auth is not None and sender_auth.refuses_ehlo(self._helo, self._client_ip):
            raise SmtpError(replies.EHLO_IMPERSONATION, reason=f"EHLO {sanitize(self._helo)} impersonation")
        self._sender = "" if event.reverse_path is None else str(event.reverse_path)
        self._smtputf8 = event.smtputf8
        self._dsn = (event.ret or "", event.envid or "")
        return self._conn.default_reply(event)

    def _on_rcpt(self, event: events.Rcpt) -> Reply:
        listed = self._admission.rcpt_refusal if self._admission is not None else None
        if listed is not None and self._user is None:  # [policy] dnsbl_reject = "rcpt"
            raise SmtpError(listed, reason="client on a DNS block list")
        address = event.forward_path
        accounts = self._services.accounts
        if address.domain and not accounts.is_local_domain(address.domain):
            recipient = self._remote_recipient(event)
            self._check_rcpt_limits(event)
            self._add_recipient(recipient)
            return self._rcpt_accepted(event)
        mailboxes = accounts.resolve(address.local_part, address.domain)
        if not mailboxes:
            raise SmtpError(replies.NO_SUCH_USER, reason="unknown recipient")
        self._check_rcpt_limits(event)
        rcpt_text = str(address)
        for mailbox in mailboxes:
            self._add_recipient(Recipient(rcpt_text, mailbox, "local", *_dsn_params(event)))
        return self._rcpt_accepted(event)

    def _rcpt_accepted(self, event: events.Rcpt) -> Reply:
        reply = self._conn.default_reply(event)
        self._services.maillog.recipient_accepted(
            session_id=self.session_id, rcpt=str(event.forward_path), reply=str(reply)
        )
        return reply

    def _remote_recipient(self, event: events.Rcpt) -> Recipient:
        """Relaying: only for an authenticated user or a client in [smtp] relay_networks (like Postfix's
        permit_sasl_authenticated, permit_mynetworks); never by a source route (RFC 5321 4.1.2, 3.6.1)."""
        address = event.forward_path
        if not self._may_relay():
            reply = replies.SOURCE_ROUTE_RELAY_DENIED if event.source_route else replies.RELAY_DENIED
            raise SmtpError(reply, reason=f"relay denied for {address.domain}")
        if address.domain.startswith("["):
            raise SmtpError(replies.RELAY_DENIED, reason="relay to an address literal")
        remote = f"{address.local_part}@{address.domain.lower()}"
        return Recipient(str(address), remote, "smtp", *_dsn_params(event))

    def _may_relay(self) -> bool:
        if self._user is not None:
            return True
        if self._trusted_network is None:
            try:
                client = ipaddress.ip_address(self._client_ip)
            except ValueError:
                return False
            self._trusted_network = any(client in net for net in self._services.smtp.relay_networks)
        return self._trusted_network

    def _add_recipient(self, recipient: Recipient) -> None:
        if recipient.mailbox not in self._mailboxes:  # one copy per mailbox, whatever the aliases (3.3)
            self._mailboxes.add(recipient.mailbox)
            self._recipients.append(recipient)

    def _on_command_error(self, event: events.CommandError) -> Reply:
        self._services.maillog.rejected(
            session_id=self.session_id, command="", argument="", reply=str(event.reply), reason=event.reason
        )
        if event.reply.code == 421 or self._spool is None:
            return event.reply
        # A refused BDAT or DATA sequence: nothing of this transaction's body may survive.
        self._spool.abort()
        self._spool = None
        self._receiving = False
        return event.reply

    def _on_data(self, event: events.Data) -> Reply:
        self._open_spool()
        self._receiving = True
        return self._conn.default_reply(event)

    def _on_bdat(self, event: events.Bdat) -> None:
        if self._recipients and self._spool is None:
            self._open_spool()
        self._receiving = True

    def _on_data_chunk(self, event: events.DataChunk) -> None:
        if self._completer is not None:
            self._completer.feed(event.data)
        elif self._spool is not None:
            self._spool.write(event.data)

    def _open_spool(self) -> None:
        services = self._services
        try:
            spool = services.queue.open_spool(sender=self._sender, recipients=self._recipients)
        except OSError as exc:
            raise SmtpError(replies.INSUFFICIENT_STORAGE, reason=f"cannot open a spool file: {exc}") from exc
        protocol = protocol_name(
            extended=self._extended,
            tls=self._conn.tls_active,
            authenticated=self._user is not None,
            smtputf8=self._smtputf8,
        )
        spool.write(
            received_header(
                helo=self._helo,
                client_ip=self._client_ip,
                hostname=services.hostname,
                queue_id=spool.queue_id,
                protocol=protocol,
                recipient=self._recipients[0].address if len(self._recipients) == 1 else None,
                now=services.clock(),
            )
        )
        if services.require_auth:  # RFC 6409 8: complete what mail clients leave out
            self._completer = HeaderCompleter(
                write=spool.write, hostname=services.hostname, unique=spool.queue_id, now=services.clock()
            )
        self._spool = spool

    def _on_chunk_end(self, event: events.EndOfChunk) -> Reply:
        if event.problem is not None:
            self._abort_transaction()
            return event.problem
        return self._conn.default_reply(event)

    # --- end of a message: the group commit ------------------------------------------------------

    def _finish_message(self, event: events.EndOfData | events.EndOfChunk) -> None:
        self._receiving = False
        spool = self._spool
        if event.problem is not None or spool is None or self._sender is None:
            reply = event.problem or replies.BAD_SEQUENCE
            self._services.maillog.message_refused(
                session_id=self.session_id, sender=self._sender or "", reply=str(reply), reason="content"
            )
            self._abort_transaction()
            self._send(reply)
            self._after_transaction()
            return
        if self._completer is not None:
            self._completer.finish()
        envelope = Envelope(
            sender=self._sender,
            recipients=tuple(self._recipients),
            client_ip=self._client_ip,
            helo=self._helo,
            ret=self._dsn[0],
            envid=self._dsn[1],
        )
        self._await_reply(self._commit(spool, envelope))

    def _await_reply(self, waiting: Coroutine[Any, Any, Reply | None]) -> None:
        """Stop reading, wait for ``waiting`` (off the protocol's turn), send its reply, go on."""
        self._busy = True
        self._flush()
        if self._transport is not None:
            self._transport.pause_reading()
        self._task = self._loop.create_task(self._reply_when_done(waiting))

    async def _reply_when_done(self, waiting: Coroutine[Any, Any, Reply | None]) -> None:
        try:
            reply = await waiting
        except Exception as exc:
            self._services.log.failure("session.error", exc, session_id=self.session_id)
            reply = replies.LOCAL_ERROR
        self._busy = False
        if self._closing:
            return
        if reply is not None:
            self._send(reply)
        if self._transport is not None and not self._closing:
            self._transport.resume_reading()
        self._after_transaction()

    async def _commit(self, spool: SpoolWriter, envelope: Envelope) -> Reply:
        refusal = await self._authenticate_sender(spool, envelope)
        if refusal is not None:
            spool.abort()
            self._spool = None
            self._reset_transaction()
            return refusal
        try:
            queue_id = await self._services.queue.commit(spool, envelope)
        except QueueError as exc:
            reply = replies.QUEUE_UNAVAILABLE
            self._services.maillog.message_refused(
                session_id=self.session_id, sender=envelope.sender, reply=str(reply), reason=str(exc)
            )
        except Exception as exc:
            self._services.log.failure("session.commit_error", exc, session_id=self.session_id)
            reply = replies.LOCAL_ERROR
        else:
            reply = replies.queued(queue_id)
            self._messages += 1
            if self._services.rate_limits is not None:  # bytes per hour per user
                self._services.rate_limits.accepted(user=self._user, size=spool.size)
            self._services.maillog.queued(
                queue_id=queue_id,
                session_id=self.session_id,
                sender=envelope.sender,
                recipients=len(envelope.recipients),
                size=spool.size,
                client=self._client_ip,
            )
        self._spool = None
        self._reset_transaction()
        return reply

    async def _authenticate_sender(self, spool: SpoolWriter, envelope: Envelope) -> Reply | None:
        """SPF, DKIM, DMARC (MX listener; not for our own users and relay_networks): a refusal, or None
        once the Authentication-Results header is on top of the message."""
        sender_auth = self._services.sender_auth
        if sender_auth is None or self._may_relay() or sender_auth.exempt(self._client_ip):
            return None
        try:
            spilled = spool.spilled  # a spooled file is read back and rewritten off the event loop
            limit = sender_auth.read_limit
            head = await asyncio.to_thread(spool.head, limit) if spilled else spool.head(limit)
            verdict = await sender_auth.check(
                client_ip=self._client_ip, helo=self._helo, sender=envelope.sender, message=head
            )
            self._services.log.info("sender_auth.checked", session_id=self.session_id, **verdict.summary)
            if verdict.refusal is None:
                if spilled:
                    await asyncio.to_thread(spool.prepend, verdict.header)
                else:
                    spool.prepend(verdict.header)
                return None
        except Exception as exc:
            self._services.log.failure("sender_auth.error", exc, session_id=self.session_id)
            return replies.LOCAL_ERROR
        reply = replies.DMARC_REJECTED if verdict.refusal == "dmarc" else replies.SPF_REJECTED
        self._services.maillog.message_refused(
            session_id=self.session_id,
            sender=envelope.sender,
            reply=str(reply),
            reason=f"{verdict.refusal} policy",
        )
        return reply

    def _after_transaction(self) -> None:
        if self._shutdown_requested and not self._closing:
            self._close_with(replies.SHUTTING_DOWN, reason="server shutdown")
            return
        if not self._closing:
            self._pump()

    # --- STARTTLS (RFC 3207) and AUTH (RFC 4954) -----------------------------------------------------

    def _on_starttls(self, event: events.StartTls) -> Answer:
        context = self._services.tls_context
        if context is None:  # the protocol offers STARTTLS only when told to; this is a wiring bug
            raise SmtpError(replies.NOT_IMPLEMENTED, reason="STARTTLS without a TLS context")
        self._send(self._conn.default_reply(event))
        if self._transport is not None:
            self._transport.pause_reading()  # the ClientHello must reach the TLS layer, not data_received
        self._early_tls_data = []
        return self._upgrade(context)

    async def _upgrade(self, context: ssl.SSLContext) -> Reply | None:
        """The handshake; on success the client starts over with EHLO (no reply of ours is due)."""
        assert self._transport is not None
        try:
            transport = await self._loop.start_tls(
                self._transport, self, context, server_side=True, ssl_handshake_timeout=30
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._early_tls_data = None
            self._services.log.info("tls.failed", session_id=self.session_id, error=str(exc))
            self._close_reason = "TLS handshake failed"
            self._closing = True
            self._transport.abort()
            return None
        if transport is None:  # pragma: no cover - the peer went away during the handshake
            self._closing = True
            return None
        self._transport = transport
        self._conn.tls_started()
        self._user = None
        early, self._early_tls_data = self._early_tls_data or [], None
        for data in early:
            self._conn.receive_data(data)
        cipher = transport.get_extra_info("cipher")
        self._services.log.info(
            "tls.started",
            session_id=self.session_id,
            version=transport.get_extra_info("ssl_object").version() if cipher else "",
            cipher=cipher[0] if cipher else "",
        )
        return None

    def _on_auth(self, event: events.Auth) -> Answer:
        authenticator = self._services.authenticator
        if authenticator is None:  # the protocol offers AUTH only when told to; this is a wiring bug
            raise SmtpError(replies.NOT_IMPLEMENTED, reason="AUTH without an authenticator")
        self._sasl, step = authenticator.start_exchange(event.mechanism, event.initial_response)
        return self._sasl_step(step)

    def _on_auth_response(self, event: events.AuthResponse) -> Answer:
        if self._sasl is None:  # pragma: no cover - the protocol only emits responses after our 334
            raise SmtpError(replies.BAD_SEQUENCE, reason="SASL response without an exchange")
        return self._sasl_step(self._sasl.step(event.response))

    def _sasl_step(self, step: Step) -> Answer:
        if isinstance(step, Challenge):
            return Reply(334, None, step.text)
        self._sasl = None
        if isinstance(step, Credentials | ScramProof):
            return self._authenticate(step)
        if isinstance(step, Verified):  # the client took SCRAM's server-final message
            return self._logged_in(step.user)
        if isinstance(step, Unsupported):
            raise SmtpError(replies.AUTH_CHANNEL_BINDING, reason=step.reason)
        raise SmtpError(replies.AUTH_RESPONSE_SYNTAX, reason=step.reason)

    async def _authenticate(self, credentials: Credentials | ScramProof) -> Reply:
        authenticator = self._services.authenticator
        log = self._services.log
        try:
            user = await authenticator.check(credentials, ip=self._client_ip) if authenticator else None
        except LoginThrottled as exc:
            log.info("auth.throttled", session_id=self.session_id, client=self._client_ip, reason=str(exc))
            return replies.AUTH_THROTTLED
        if user is None:
            log.info(
                "auth.failed",
                session_id=self.session_id,
                client=self._client_ip,
                username=sanitize(credentials.username),
            )
            return replies.AUTH_FAILED
        if isinstance(credentials, ScramProof):  # RFC 4954 4: data with success goes in a 334, then 235
            self._sasl = Acknowledgement(user)
            return Reply(334, None, credentials.server_final)
        return self._logged_in(user)

    def _logged_in(self, user: str) -> Reply:
        self._user = user
        self._services.log.info("auth.ok", session_id=self.session_id, client=self._client_ip, user=user)
        return replies.AUTH_OK

    def _check_sender(self, event: events.Mail) -> None:
        """Submission (RFC 6409): only an authenticated user, and only as one of their own addresses."""
        if self._user is None:
            raise SmtpError(replies.AUTH_REQUIRED, reason="MAIL before AUTH on submission")
        sender = event.reverse_path
        owned = sender is not None and self._user in (
            self._services.accounts.resolve(sender.local_part, sender.domain) or ()
        )
        if not owned:
            raise SmtpError(replies.SENDER_NOT_OWNED, reason=f"{self._user} may not send as {sender}")

    # --- rate limits and greylisting (policy/limits.py) ---------------------------------------------------

    def _refused_by_rate(self) -> bool:
        """New connections per client IP per minute: beyond, 421 4.7.0 and close."""
        rate_limits = self._services.rate_limits
        refusal = rate_limits.connection(self._client_ip) if rate_limits is not None else None
        if refusal is None:
            return False
        self._services.maillog.refused_connection(
            client=self._client_ip, listener=self._listener, reply=str(refusal.reply)
        )
        self._close_with(refusal.reply, reason=refusal.reason)
        return True

    def _check_mail_limits(self, event: events.Mail) -> None:
        rate_limits = self._services.rate_limits
        if rate_limits is None:
            return
        sender = "" if event.reverse_path is None else str(event.reverse_path)
        refusal = rate_limits.mail(
            ip=self._client_ip, sender=sender, user=self._user, messages=self._messages, size=event.size
        )
        if refusal is not None:
            raise SmtpError(refusal.reply, reason=refusal.reason)

    def _check_rcpt_limits(self, event: events.Rcpt) -> None:
        rate_limits = self._services.rate_limits
        if rate_limits is None or self._sender is None:
            return
        refusal = rate_limits.rcpt(
            ip=self._client_ip, sender=self._sender, user=self._user, recipient=str(event.forward_path)
        )
        if refusal is not None:
            raise SmtpError(refusal.reply, reason=refusal.reason)

    def _reject(self, event: events.Event, reply: Reply, reason: str) -> None:
        self._services.maillog.rejected(
            session_id=self.session_id,
            command=type(event).__name__.upper(),
            argument=str(getattr(event, "forward_path", getattr(event, "reverse_path", ""))),
            reply=str(reply),
            reason=reason,
        )
