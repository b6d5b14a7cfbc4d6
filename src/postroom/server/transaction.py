"""The mail transaction of one connection: what MAIL and RCPT accepted, the body streamed into a spool file
(DATA or BDAT chunks, headers completed on submission), and the commit at the end of data (sender
authentication first, then the queue's group commit; counted for the rate limits and the close event).

It neither reads nor writes the socket and sends no reply: it raises SmtpError for a "no" (as EnvelopeRules
does) and returns the reply at the end of data; the session (session.py) sends it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from postroom.queue import Envelope, QueueError, Recipient, SpoolWriter
from postroom.server.envelope import EnvelopeRules
from postroom.server.headers import HeaderCompleter
from postroom.server.message_auth import authenticate_message
from postroom.server.received import protocol_name, received_header
from postroom.server.services import SessionServices
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Reply

__all__ = ["Transaction"]


class Transaction:
    """MAIL, RCPTs and the spool file of the body, for the client at ``client_ip`` (one per connection,
    reset between messages); ``messages`` counts the ones queued on this connection."""

    def __init__(
        self, *, services: SessionServices, rules: EnvelopeRules, session_id: str, client_ip: str
    ) -> None:
        self._services = services
        self._rules = rules
        self._session_id = session_id
        self._client_ip = client_ip
        self.messages = 0
        self.receiving = False  # inside DATA or a BDAT chunk
        self._helo = ""  # from the last EHLO/HELO (kept across transactions)
        self._extended = False
        self._sender: str | None = None
        self._smtputf8 = False
        self._dsn = ("", "")  # RET and ENVID of the transaction's MAIL (RFC 3461)
        self._recipients: list[Recipient] = []
        self._mailboxes: set[str] = set()
        self._spool: SpoolWriter | None = None
        self._completer: HeaderCompleter | None = None  # submission: Date / Message-ID if missing

    @property
    def under_way(self) -> bool:
        """Recipients accepted or a body being received: closing now would lose them."""
        return self.receiving or self._spool is not None or bool(self._recipients)

    def _reset(self) -> None:
        self._sender = None
        self._smtputf8 = False
        self._dsn = ("", "")
        self._recipients = []
        self._mailboxes = set()
        self._spool = None
        self._completer = None

    def abort(self) -> None:
        """Forget the transaction (RSET, a new EHLO or MAIL, a refused chunk): its spool file goes too."""
        if self._spool is not None:
            self._spool.abort()
        self.receiving = False
        self._reset()

    def drop_body(self) -> None:
        """A refused DATA or BDAT sequence, or the connection gone: nothing of the body may survive."""
        if self._spool is None:
            return
        self._spool.abort()
        self._spool = None
        self.receiving = False

    # --- the envelope -------------------------------------------------------------------------------

    def hello(self, event: events.Ehlo) -> None:
        self.abort()
        self._helo = event.domain
        self._extended = event.extended

    def mail(self, event: events.Mail, *, user: str | None) -> None:
        """A new transaction from this MAIL FROM; SmtpError when it is refused."""
        self.abort()
        self._rules.check_mail(event, user=user, helo=self._helo, messages=self.messages)
        self._sender = "" if event.reverse_path is None else str(event.reverse_path)
        self._smtputf8 = event.smtputf8
        self._dsn = (event.ret or "", event.envid or "")

    def rcpt(self, event: events.Rcpt, *, user: str | None) -> None:
        """The mailboxes of this RCPT TO join the transaction; SmtpError when it is refused."""
        for recipient in self._rules.recipients(event, user=user, sender=self._sender):
            if recipient.mailbox not in self._mailboxes:  # one copy per mailbox, whatever the aliases (3.3)
                self._mailboxes.add(recipient.mailbox)
                self._recipients.append(recipient)

    # --- the body -----------------------------------------------------------------------------------

    def data(self, *, tls: bool, user: str | None) -> None:
        """DATA accepted by the protocol: the body goes into a new spool file."""
        self._open_spool(tls=tls, user=user)
        self.receiving = True

    def bdat(self, *, tls: bool, user: str | None) -> None:
        """A BDAT chunk begins (the first one opens the spool file, when there are recipients)."""
        if self._recipients and self._spool is None:
            self._open_spool(tls=tls, user=user)
        self.receiving = True

    def write(self, data: bytes, *, crlf_only: bool = False) -> None:
        """Message octets; ``crlf_only``: every CR and LF in them is part of a CRLF (see DataChunk)."""
        if self._completer is not None:
            self._completer.feed(data)
        elif self._spool is not None:
            self._spool.write(data, crlf_only=crlf_only)

    def _open_spool(self, *, tls: bool, user: str | None) -> None:
        services = self._services
        try:
            spool = services.queue.open_spool(sender=self._sender, recipients=self._recipients)
        except OSError as exc:
            raise SmtpError(replies.INSUFFICIENT_STORAGE, reason=f"cannot open a spool file: {exc}") from exc
        protocol = protocol_name(
            extended=self._extended, tls=tls, authenticated=user is not None, smtputf8=self._smtputf8
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

    # --- end of data: the commit --------------------------------------------------------------------

    def finish(
        self, event: events.EndOfData | events.EndOfChunk, *, user: str | None
    ) -> Reply | Coroutine[Any, Any, Reply]:
        """The end of the body: the refusal now, or the commit to wait for (its reply once it is durable)."""
        self.receiving = False
        spool = self._spool
        if event.problem is not None or spool is None or self._sender is None:
            reply = event.problem or replies.BAD_SEQUENCE
            self._services.maillog.message_refused(
                session_id=self._session_id, sender=self._sender or "", reply=str(reply), reason="content"
            )
            self.abort()
            return reply
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
        return self._commit(spool, envelope, user)

    async def _commit(self, spool: SpoolWriter, envelope: Envelope, user: str | None) -> Reply:
        services = self._services
        refusal = await self._authenticate_sender(spool, envelope, user)
        if refusal is not None:
            spool.abort()
            self._reset()
            return refusal
        try:
            queue_id = await services.queue.commit(spool, envelope)
        except QueueError as exc:
            reply = replies.QUEUE_UNAVAILABLE
            services.maillog.message_refused(
                session_id=self._session_id, sender=envelope.sender, reply=str(reply), reason=str(exc)
            )
        except Exception as exc:
            services.log.failure("session.commit_error", exc, session_id=self._session_id)
            reply = replies.LOCAL_ERROR
        else:
            reply = replies.queued(queue_id)
            self.messages += 1
            if services.rate_limits is not None:  # bytes per hour per user
                services.rate_limits.accepted(user=user, size=spool.size)
            services.maillog.queued(
                queue_id=queue_id,
                session_id=self._session_id,
                sender=envelope.sender,
                recipients=len(envelope.recipients),
                size=spool.size,
                client=self._client_ip,
            )
        self._reset()
        return reply

    async def _authenticate_sender(
        self, spool: SpoolWriter, envelope: Envelope, user: str | None
    ) -> Reply | None:
        """SPF, DKIM, DMARC (MX listener; not for our own users, relay_networks and exempt_networks): a
        refusal, or None once the Authentication-Results header is on top of the message (message_auth.py)."""
        sender_auth = self._services.sender_auth
        if sender_auth is None or self._rules.may_relay(user) or sender_auth.exempt(self._client_ip):
            return None
        return await authenticate_message(self._services, spool, envelope, session_id=self._session_id)
