"""One SMTP session per connection: feeds the socket's bytes to smtp.ServerConnection, answers each event by
asking its helpers, and writes the replies back.

The work lives beside it: the mail transaction (envelope, body into the spool, the commit) in transaction.py,
MAIL and RCPT decisions in envelope.py, STARTTLS and AUTH in login.py, the timeouts in deadlines.py,
SPF/DKIM/DMARC at the end of data in message_auth.py; what a session is given in services.py.

This is the one place where an SmtpError becomes its reply; anything else raised while answering is a bug:
it is logged with its traceback, the client gets 451 4.3.0, and the session keeps serving.

Replies are gathered while pipelined commands are answered and written in one go when the protocol needs
more bytes (RFC 2920), or before anything that waits (the group commit of a message).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import typing
from collections.abc import Callable, Coroutine
from typing import Any

from postroom.server.admission import Admission
from postroom.server.deadlines import Deadlines
from postroom.server.envelope import EnvelopeRules
from postroom.server.login import Login, TlsUpgrade
from postroom.server.services import SessionServices
from postroom.server.transaction import Transaction
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.events import NEED_DATA
from postroom.smtp.server import ServerConnection
from postroom.smtp.types import Reply

__all__ = ["Session", "SessionServices"]

# A reply now, one to wait for (None when the wait ends with nothing to say: STARTTLS), or none at all.
Answer = Reply | Coroutine[Any, Any, Reply | None] | None

_session_numbers = itertools.count(1)


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
        self._deadlines = Deadlines(
            loop=self._loop,
            settings=services.smtp,
            busy=lambda: self._busy,
            expire=lambda reply, reason: self._close_with(reply, reason=reason),
        )
        self._bytes_in = self._bytes_out = 0  # reported in the close event (metrics)
        self._close_reason = "client closed"
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
        self._tls: TlsUpgrade | None = None  # set while the STARTTLS handshake is under way
        # Made by connection_made, once the client's address is known (after any PROXY header):
        self._login: Login  # AUTH, and who logged in
        self._mail: Transaction  # MAIL, RCPTs, the body in its spool file, the commit

    @property
    def _user(self) -> str | None:
        """The authenticated mailbox; None before AUTH (and after STARTTLS)."""
        return self._login.user

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self._transport.get_extra_info("peername")
        self._client_ip = str(peer[0]) if peer else "unknown"
        if self._admission is not None:  # the gate read a PROXY header: the client behind the proxy
            self._client_ip = self._admission.client_ip
        self._meet_client()
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
        self._deadlines.arm(receiving=self._mail.receiving)

    def _meet_client(self) -> None:
        """The helpers that depend on who the client is."""
        services = self._services
        rules = EnvelopeRules(  # MAIL and RCPT decisions
            client_ip=self._client_ip,
            accounts=services.accounts,
            relay_networks=services.smtp.relay_networks,
            submission=services.require_auth,
            rate_limits=services.rate_limits,
            sender_auth=services.sender_auth,
            rcpt_refusal=self._admission.rcpt_refusal if self._admission is not None else None,
        )
        self._login = Login(
            authenticator=services.authenticator,
            log=services.log,
            session_id=self.session_id,
            client_ip=self._client_ip,
        )
        self._mail = Transaction(
            services=services, rules=rules, session_id=self.session_id, client_ip=self._client_ip
        )

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
        if self._closing:
            return
        if self._tls is not None:
            # Decrypted bytes that the TLS layer delivered right after the handshake, before _upgrade
            # resumed: the client's first EHLO. Fed to the protocol once it knows TLS is on.
            self._tls.early.append(data)
            return
        self._deadlines.touch()
        self._conn.receive_data(data)
        if not self._busy:
            self._pump()

    def eof_received(self) -> bool | None:
        self._close_reason = "client closed"
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._deadlines.cancel()
        if not self._busy:
            self._mail.drop_body()
        if self._counted:
            self._services.limits.release(self._client_ip)
            self._services.maillog.disconnected(
                session_id=self.session_id,
                client=self._client_ip,
                messages=self._mail.messages,
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
        return not (self._busy or self._mail.under_way)

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
                self._deadlines.arm(receiving=self._mail.receiving)
                return
            if not isinstance(event, events.DataChunk):
                self._deadlines.cancel()
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
            self._deadlines.cancel()
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
        self._deadlines.cancel()
        if self._transport is not None:
            self._transport.write(reply.to_bytes())
            self._transport.close()

    # --- handlers: one per event (the transaction's own work in transaction.py) -------------------------

    def _on_ehlo(self, event: events.Ehlo) -> Reply:
        self._mail.hello(event)
        return self._conn.default_reply(event)

    def _on_rset(self, event: events.Rset) -> Reply:
        self._mail.abort()
        return self._conn.default_reply(event)

    def _on_mail(self, event: events.Mail) -> Reply:
        self._mail.mail(event, user=self._user)
        return self._conn.default_reply(event)

    def _on_rcpt(self, event: events.Rcpt) -> Reply:
        self._mail.rcpt(event, user=self._user)
        reply = self._conn.default_reply(event)
        self._services.maillog.recipient_accepted(
            session_id=self.session_id, rcpt=str(event.forward_path), reply=str(reply)
        )
        return reply

    def _on_command_error(self, event: events.CommandError) -> Reply:
        self._services.maillog.rejected(
            session_id=self.session_id, command="", argument="", reply=str(event.reply), reason=event.reason
        )
        if event.reply.code != 421:  # a refused BDAT or DATA sequence: nothing of its body may survive
            self._mail.drop_body()
        return event.reply

    def _on_data(self, event: events.Data) -> Reply:
        self._mail.data(tls=self._conn.tls_active, user=self._user)
        return self._conn.default_reply(event)

    def _on_bdat(self, event: events.Bdat) -> None:
        self._mail.bdat(tls=self._conn.tls_active, user=self._user)

    def _on_data_chunk(self, event: events.DataChunk) -> None:
        self._mail.write(event.data, crlf_only=event.crlf_only)

    def _on_chunk_end(self, event: events.EndOfChunk) -> Reply:
        if event.problem is not None:
            self._mail.abort()
            return event.problem
        return self._conn.default_reply(event)

    # --- end of a message: the group commit ------------------------------------------------------

    def _finish_message(self, event: events.EndOfData | events.EndOfChunk) -> None:
        outcome = self._mail.finish(event, user=self._user)
        if isinstance(outcome, Reply):  # refused: the transaction is gone
            self._send(outcome)
            self._after_transaction()
        else:
            self._await_reply(outcome)

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
        if self._transport is None:  # pragma: no cover - events come from a connected transport only
            return None
        self._tls = TlsUpgrade(
            transport=self._transport, context=context, log=self._services.log, session_id=self.session_id
        )
        return self._upgrade(self._tls)

    async def _upgrade(self, upgrade: TlsUpgrade) -> Reply | None:
        """The handshake; on success the client starts over with EHLO (no reply of ours is due)."""
        transport = await upgrade.run(self)
        self._tls = None
        if transport is None:  # failed (logged, aborted), or the peer went away during the handshake
            if upgrade.failed:
                self._close_reason = "TLS handshake failed"
            self._closing = True
            return None
        self._transport = transport
        self._conn.tls_started()
        self._login.forget()
        for data in upgrade.early:
            self._conn.receive_data(data)
        return None

    def _on_auth(self, event: events.Auth) -> Answer:
        return self._login.start(event)

    def _on_auth_response(self, event: events.AuthResponse) -> Answer:
        return self._login.respond(event)

    # --- the connection rate (policy/limits.py) and the rejection log -----------------------------------

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

    def _reject(self, event: events.Event, reply: Reply, reason: str) -> None:
        self._services.maillog.rejected(
            session_id=self.session_id,
            command=type(event).__name__.upper(),
            argument=str(getattr(event, "forward_path", getattr(event, "reverse_path", ""))),
            reply=str(reply),
            reason=reason,
        )
