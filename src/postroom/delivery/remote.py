"""Remote delivery: one message's recipients at one domain, carried to that domain's MX hosts over SMTP.

Theory of operation: ``RemoteCourier.deliver`` takes the recipients of one message that share a domain (one
SMTP transaction, RFC 5321 3.3). It waits for a place under the global and the per-domain connection limits,
refuses a message that went round too often (Received: count), asks DNS for the mail hosts (mx.py: best
first, implicit MX, null MX) and tries each host's addresses in turn until one holds a transaction: EHLO
(HELO fallback), STARTTLS when offered (required, with a verified certificate, for the domains in
``require_tls``), MAIL with SIZE and BODY=8BITMIME as offered, RCPTs (pipelined when offered), then the body
with BDAT (CHUNKING) or DATA, streamed from the inline body or the spool file. Per-recipient outcomes come
from the RCPT replies and the final reply; a host that cannot be reached or refuses to start sends us to the
next one. The DSN parameters go on to a host that offers DSN (dsn_params.py); connections are kept for the
next message to the same host (pool.py, RSET between); with ``relay_host`` every message goes to the
smarthost instead of the MX hosts (smarthost.py). A domain with an MTA-STS policy in enforce mode
(mta_sts.py) gets only the MX hosts its policy names, each over TLS with a verified certificate; in testing
mode a mismatch is logged and delivery goes on as usual. It decides no retry timing and classifies nothing
itself (outcome.py does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from postroom.config.schema import DeliverySettings
from postroom.delivery.dkim_sign import DkimSigner
from postroom.delivery.dsn_params import mail_params, rcpt_params
from postroom.delivery.mta_sts import MtaSts, Policy
from postroom.delivery.outcome import MailLoopError, SpoolFileMissingError, failed, replied
from postroom.delivery.pool import ConnectionPool
from postroom.delivery.slots import ConnectionSlots
from postroom.delivery.smarthost import is_ip, parse_relay_host, relay_login
from postroom.delivery.smtp_session import HostRefused, SmtpSession
from postroom.dns import DnsError, MailHost, Resolver, TemporaryDnsError, mail_hosts, resolve_host
from postroom.observe.log import Logger, sanitize
from postroom.queue import DueRecipient, Outcome
from postroom.smtp import replies
from postroom.smtp.errors import LocalProtocolError, RemoteProtocolError
from postroom.smtp.grammar import parse_path
from postroom.smtp.types import Address, Reply

__all__ = ["RemoteCourier"]

_CHUNK = 64 * 1024
_HEADERS_MAX = 256 * 1024  # Received: lines are counted in this much of the message at most
_TRY_NEXT_HOST = (OSError, TimeoutError, HostRefused, RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class _Body:
    """The message to send: inline bytes or a spool file, its size, and its header section; ``prefix``
    (a DKIM-Signature) goes in front of it and is counted in ``size``."""

    size: int
    headers: bytes
    inline: bytes | None
    path: Path | None
    prefix: bytes = b""

    async def chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """(chunk, is it the last) pairs, read ahead by one chunk so the last is known."""
        if self.inline is not None:
            inline = self.prefix + self.inline
            for start in range(0, max(len(inline), 1), _CHUNK):
                yield inline[start : start + _CHUNK], start + _CHUNK >= len(inline)
            return
        assert self.path is not None
        file = await asyncio.to_thread(open, self.path, "rb")
        try:
            current = self.prefix + await asyncio.to_thread(file.read, _CHUNK)
            while True:
                following = await asyncio.to_thread(file.read, _CHUNK)
                yield current, not following
                if not following:
                    return
                current = following
        finally:
            file.close()


@dataclass(frozen=True, slots=True)
class _Job:
    """One transaction's worth: a message's recipients at one domain, their parsed addresses, the body."""

    domain: str
    sender: Address | None
    recipients: Sequence[DueRecipient]
    addresses: Sequence[Address]
    body: _Body
    sts: Policy | None = None  # the domain's MTA-STS policy (enforce or testing), if it has one
    require_tls: bool = False  # TLS with a verified certificate, or no delivery (require_tls, MTA-STS)

    @property
    def queue_id(self) -> str:
        return self.recipients[0].queue_id


def _received_count(headers: bytes) -> int:
    end = headers.find(b"\r\n\r\n")
    section = headers if end < 0 else headers[:end]
    return sum(1 for line in section.split(b"\r\n") if line[:9].lower() == b"received:")


def _parse_address(text: str) -> Address:
    """An address as stored in the queue, back into an Address; raises RemoteProtocolError (5xx)."""
    address, _route, _rest = parse_path(f"<{text}>", bad=replies.BAD_RECIPIENT_ADDRESS)
    if address is None:
        raise ValueError("the null path is not a recipient")
    return address


class RemoteCourier:
    """Delivers groups of remote recipients (one message, one domain) on the event loop."""

    def __init__(
        self,
        *,
        settings: DeliverySettings,
        resolver: Resolver | None,
        hostname: str,
        spool_path: Callable[[str], Path],
        log: Logger,
        rng: random.Random | None = None,
        signer: DkimSigner | None = None,
        mta_sts: MtaSts | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._hostname = hostname
        self._spool_path = spool_path
        self._log = log
        self._rng = rng or random.Random()  # noqa: S311 - MX shuffling, not cryptography
        self._signer = signer
        self._mta_sts = mta_sts if settings.relay_host == "" else None  # a smarthost is not an MX
        self._limits = ConnectionSlots(
            total=settings.max_connections, per_domain=settings.max_connections_per_domain
        )
        self._require_tls = frozenset(domain.lower() for domain in settings.require_tls)
        self._relay = parse_relay_host(settings.relay_host)  # (host, port) or None
        self._pool = ConnectionPool(
            max_messages=max(1, settings.max_messages_per_connection),
            idle=settings.connection_idle,
            max_idle=max(1, settings.max_connections),
        )
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False  # RFC 7435: encryption without authentication
        self._opportunistic.verify_mode = ssl.CERT_NONE
        ca_file = str(settings.tls_ca_file) if settings.tls_ca_file is not None else None
        self._verified = ssl.create_default_context(cafile=ca_file)

    def update(self, settings: DeliverySettings) -> None:
        """New settings (SIGHUP): timeouts, max_received and require_tls for the next message, the connection
        caps for the next connection. The smarthost, TLS CA file, MTA-STS and reuse settings stay as built."""
        self._settings = settings
        self._require_tls = frozenset(domain.lower() for domain in settings.require_tls)
        self._limits.update(total=settings.max_connections, per_domain=settings.max_connections_per_domain)

    async def close(self) -> None:
        """Closes the connections kept for reuse (QUIT); call after the last delivery."""
        await self._pool.close()

    async def deliver(self, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        """One outcome per recipient, in order; never raises for a delivery failure."""
        domain = recipients[0].domain
        async with self._limits.slot(domain):
            try:
                return await self._deliver(domain, recipients)
            except (DnsError, MailLoopError, SpoolFileMissingError, OSError) as exc:
                return [failed(recipient, exc) for recipient in recipients]

    async def _deliver(self, domain: str, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        first = recipients[0]
        outcomes: dict[int, Outcome] = {}
        addresses: dict[int, Address] = {}
        for recipient in recipients:
            try:
                addresses[recipient.idx] = _parse_address(recipient.mailbox)
            except (RemoteProtocolError, ValueError) as exc:
                outcomes[recipient.idx] = failed(recipient, exc)
        try:
            sender = _parse_address(first.sender) if first.sender else None
        except (RemoteProtocolError, ValueError) as exc:
            return [failed(recipient, exc) for recipient in recipients]
        sendable = [recipient for recipient in recipients if recipient.idx in addresses]
        if sendable:
            body = await self._body(first)
            if _received_count(body.headers) > self._settings.max_received:
                raise MailLoopError(f"mail loop: more than {self._settings.max_received} Received headers")
            body = await self._signed(body, first)
            sts = await self._policy(domain)
            required = domain in self._require_tls or (sts is not None and sts.mode == "enforce")
            job = _Job(domain, sender, sendable, [addresses[r.idx] for r in sendable], body, sts, required)
            results = await self._try_hosts(job)
            outcomes.update(zip((r.idx for r in sendable), results, strict=True))
        return [outcomes[recipient.idx] for recipient in recipients]

    async def _body(self, recipient: DueRecipient) -> _Body:
        if recipient.body is not None:
            return _Body(len(recipient.body), recipient.body[:_HEADERS_MAX], recipient.body, None)
        path = self._spool_path(recipient.queue_id)

        def read() -> _Body:
            try:
                with open(path, "rb") as file:
                    headers = file.read(_HEADERS_MAX)
                    return _Body(path.stat().st_size, headers, None, path)
            except FileNotFoundError:
                raise SpoolFileMissingError(f"spool file of {recipient.queue_id} is missing") from None

        return await asyncio.to_thread(read)

    async def _signed(self, body: _Body, recipient: DueRecipient) -> _Body:
        """The body with its DKIM-Signature in front, when the signer has a key for it (off the loop)."""
        if self._signer is None:
            return body
        source = body.inline if body.inline is not None else body.path
        assert source is not None
        field = await asyncio.to_thread(
            self._signer.signature, source, sender=recipient.sender, queue_id=recipient.queue_id
        )
        return dataclasses.replace(body, size=body.size + len(field), prefix=field)

    async def _policy(self, domain: str) -> Policy | None:
        if self._mta_sts is None or domain.startswith("["):
            return None
        return await self._mta_sts.policy(domain)

    def _permitted(self, job: _Job, host: MailHost) -> bool:
        """RFC 8461 4.1, 5: under enforce only the MX hosts the policy names; testing only logs."""
        if job.sts is None or job.sts.allows(host.name):
            return True
        self._log.warning(
            "delivery.mta_sts_mismatch",
            queue_id=job.queue_id,
            domain=job.domain,
            host=host.name,
            mode=job.sts.mode,
        )
        return job.sts.mode != "enforce"

    async def _hosts(self, domain: str) -> list[MailHost]:
        if self._resolver is None:
            raise TemporaryDnsError(domain, "MX", "no DNS resolver is configured")
        return await mail_hosts(self._resolver, domain, rng=self._rng, local_names=(self._hostname,))

    async def _addresses(self, job: _Job) -> AsyncIterator[tuple[str, str] | DnsError]:
        """(host name, address) in the order to try them, or the DNS error that left a host with none."""
        domain = job.domain
        if domain.startswith("["):  # a domain literal: that address and no other
            literal = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
            yield literal, literal
            return
        hosts = [MailHost(self._relay[0], 0)] if self._relay else await self._hosts(domain)
        if self._relay and is_ip(self._relay[0]):  # the smarthost: no MX lookup (smarthost.py)
            yield self._relay[0], self._relay[0]
            return
        for host in hosts:
            if not self._permitted(job, host):
                reason = f"{host.name} is not named by the domain's MTA-STS policy"
                yield TemporaryDnsError(domain, "MX", reason)
                continue
            assert self._resolver is not None
            found = await resolve_host(self._resolver, host)
            if found.error is not None:
                yield found.error
            for address in found.addresses:
                yield host.name, address

    async def _try_hosts(self, job: _Job) -> list[Outcome]:
        """RFC 5321 5.1: each host in order, each of its addresses in turn, until one holds a transaction.
        If none does, the last error decides (temporary unless DNS said no for good)."""
        last_error: BaseException = TemporaryDnsError(job.domain, "A/AAAA", "no mail host could be reached")
        last_host = ""
        async for found in self._addresses(job):
            if isinstance(found, DnsError):
                last_error = found
                continue
            host, address = found
            try:
                return await self._transaction(address, host, job)
            except _TRY_NEXT_HOST as exc:
                last_error, last_host = exc, host
                self._log.warning(
                    "delivery.host_failed",
                    queue_id=job.queue_id,
                    host=host,
                    address=address,
                    error=sanitize(str(exc) or type(exc).__name__),
                )
        return [failed(recipient, last_error, remote_mta=last_host) for recipient in job.recipients]

    async def _transaction(self, address: str, host: str, job: _Job) -> list[Outcome]:
        settings = self._settings
        port = self._relay[1] if self._relay else settings.smtp_port
        key = (address, port, host, job.require_tls)
        session = self._pool.take(key)
        reused = session is not None and await session.reset()  # RSET between messages
        if session is None or not reused:
            session = await SmtpSession.open(
                address=address,
                port=port,
                hostname=self._hostname,
                connect_timeout=settings.connect_timeout,
                reply_timeout=settings.command_timeout,
            )
        try:
            if not reused:
                await session.hello()
                await self._secure(session, host, job)
            outcomes = await self._send(session, host, job)
        except HostRefused:
            await session.close()
            raise
        except BaseException:
            session.abort()
            raise
        session.messages += 1
        self._pool.give(key, session)  # kept for the next message to this host, or closed
        self._log.info(
            "delivery.transaction",
            queue_id=job.queue_id,
            host=host,
            address=address,
            tls=session.conn.tls_active,
            rcpts=len(job.recipients),
            reused=reused,
        )
        return outcomes

    async def _secure(self, session: SmtpSession, host: str, job: _Job) -> None:
        """Opportunistic STARTTLS (RFC 3207, RFC 7435); for ``require_tls`` domains and MTA-STS enforce
        policies TLS with a verified certificate for the MX host's name, or no delivery to this host."""
        if self._relay and self._settings.relay_user:
            await relay_login(session, host, settings=self._settings, context=self._verified)
            return
        required, domain = job.require_tls, job.domain
        if session.conn.supports("STARTTLS"):
            context = self._verified if required else self._opportunistic
            if await session.starttls(context, host):
                return
        if required:
            raise HostRefused(None, f"TLS is required for {domain} and {host} does not offer it")

    async def _send(self, session: SmtpSession, host: str, job: _Job) -> list[Outcome]:
        conn, sender, recipients, addresses, body = (
            session.conn,
            job.sender,
            job.recipients,
            job.addresses,
            job.body,
        )
        smtputf8 = (sender is not None and sender.needs_smtputf8) or any(a.needs_smtputf8 for a in addresses)
        dsn = conn.supports("DSN")  # RFC 3461 5.2: pass the DSN parameters on to a next hop that takes them
        try:
            conn.mail(
                sender,
                size=body.size,
                body="8BITMIME" if conn.supports("8BITMIME") else None,
                smtputf8=smtputf8,
                extra=mail_params(recipients[0]) if dsn else {},
            )
        except LocalProtocolError as exc:  # this server can never take it (over SIZE, no SMTPUTF8 ...)
            return [failed(recipient, exc, remote_mta=host) for recipient in recipients]
        params = [rcpt_params(recipient) if dsn else {} for recipient in recipients]
        mail, rcpts = await self._envelope(session, addresses, params)
        if not mail.is_positive:
            return [replied(recipient, mail, remote_mta=host) for recipient in recipients]
        accepted = [reply.is_positive for reply in rcpts]
        if not any(accepted):
            return [replied(r, reply, remote_mta=host) for r, reply in zip(recipients, rcpts, strict=True)]
        final = await self._send_body(session, body)
        return [
            replied(recipient, final if ok else reply, remote_mta=host, next_hop_reports=dsn)
            for recipient, reply, ok in zip(recipients, rcpts, accepted, strict=True)
        ]

    @staticmethod
    async def _envelope(
        session: SmtpSession, addresses: Sequence[Address], params: Sequence[Mapping[str, str | None]]
    ) -> tuple[Reply, list[Reply]]:
        """The replies to MAIL and to each RCPT: pipelined when offered (RFC 2920), else one by one."""
        conn = session.conn
        if conn.supports("PIPELINING"):
            for address, extra in zip(addresses, params, strict=True):
                conn.rcpt(address, extra=extra)
            mail = (await session.reply()).reply
            return mail, [(await session.reply()).reply for _ in addresses]
        mail = (await session.reply()).reply
        if not mail.is_positive:
            return mail, []
        rcpts = []
        for address, extra in zip(addresses, params, strict=True):
            conn.rcpt(address, extra=extra)
            rcpts.append((await session.reply()).reply)
        return mail, rcpts

    @staticmethod
    async def _send_body(session: SmtpSession, body: _Body) -> Reply:
        """The body by BDAT when CHUNKING is offered (RFC 3030: sent as is), else by DATA; the final reply."""
        conn = session.conn
        if conn.supports("CHUNKING"):
            async for chunk, last in body.chunks():
                conn.bdat(chunk, last=last)
                reply = (await session.reply()).reply
                if last or not reply.is_positive:
                    return reply
        conn.data()
        reply = (await session.reply()).reply
        if not reply.is_positive:
            return reply
        async for chunk, last in body.chunks():
            conn.send_body(chunk, final=last)
            await session.flush()
        return (await session.reply()).reply
