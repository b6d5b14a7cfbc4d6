"""Remote delivery: one message's recipients at one domain, carried to that domain's MX hosts over SMTP.

Theory of operation: ``RemoteCourier.deliver`` takes the recipients of one message that share a domain (one
SMTP transaction, RFC 5321 3.3). It waits for a place under the global and the per-domain connection limits,
refuses a message that went round too often (Received: count), asks DNS for the mail hosts (mx.py: best
first, implicit MX, null MX) and tries each host's addresses in turn until one holds a transaction: EHLO
(HELO fallback), STARTTLS when offered (required, with a verified certificate, for the domains in
``require_tls``), MAIL with SIZE and BODY=8BITMIME as offered, RCPTs (pipelined when offered), then the body
with BDAT (CHUNKING) or DATA, streamed from the inline body or the spool file. Per-recipient outcomes come
from the RCPT replies and the final reply; a host that cannot be reached or refuses to start sends us to the
next one. It decides no retry timing and classifies nothing itself (outcome.py does).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from postroom.config.schema import DeliverySettings
from postroom.delivery.outcome import MailLoopError, SpoolFileMissingError, failed, replied
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
    """The message to send: inline bytes or a spool file, its size, and its header section."""

    size: int
    headers: bytes
    inline: bytes | None
    path: Path | None

    async def chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        """(chunk, is it the last) pairs, read ahead by one chunk so the last is known."""
        if self.inline is not None:
            for start in range(0, max(len(self.inline), 1), _CHUNK):
                yield self.inline[start : start + _CHUNK], start + _CHUNK >= len(self.inline)
            return
        assert self.path is not None
        file = await asyncio.to_thread(open, self.path, "rb")
        try:
            current = await asyncio.to_thread(file.read, _CHUNK)
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


class _Limits:
    """A global limit on connections and one per destination domain (semaphores made on demand)."""

    def __init__(self, *, total: int, per_domain: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_domain = per_domain
        self._domains: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        semaphore, users = self._domains.get(domain, (asyncio.Semaphore(self._per_domain), 0))
        self._domains[domain] = (semaphore, users + 1)
        try:
            async with semaphore, self._total:
                yield
        finally:
            semaphore, users = self._domains[domain]
            if users == 1:
                del self._domains[domain]
            else:
                self._domains[domain] = (semaphore, users - 1)


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
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._hostname = hostname
        self._spool_path = spool_path
        self._log = log
        self._rng = rng or random.Random()  # noqa: S311 - MX shuffling, not cryptography
        self._limits = _Limits(
            total=max(1, settings.max_connections), per_domain=max(1, settings.max_connections_per_domain)
        )
        self._require_tls = frozenset(domain.lower() for domain in settings.require_tls)
        self._opportunistic = ssl.create_default_context()
        self._opportunistic.check_hostname = False  # RFC 7435: encryption without authentication
        self._opportunistic.verify_mode = ssl.CERT_NONE
        ca_file = str(settings.tls_ca_file) if settings.tls_ca_file is not None else None
        self._verified = ssl.create_default_context(cafile=ca_file)

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
            job = _Job(domain, sender, sendable, [addresses[r.idx] for r in sendable], body)
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

    async def _hosts(self, domain: str) -> list[MailHost]:
        if self._resolver is None:
            raise TemporaryDnsError(domain, "MX", "no DNS resolver is configured")
        return await mail_hosts(self._resolver, domain, rng=self._rng, local_names=(self._hostname,))

    async def _addresses(self, domain: str) -> AsyncIterator[tuple[str, str] | DnsError]:
        """(host name, address) in the order to try them, or the DNS error that left a host with none."""
        if domain.startswith("["):  # a domain literal: that address and no other
            literal = domain[1:-1].removeprefix("IPv6:").removeprefix("ipv6:")
            yield literal, literal
            return
        for host in await self._hosts(domain):
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
        async for found in self._addresses(job.domain):
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
        session = await SmtpSession.open(
            address=address,
            port=settings.smtp_port,
            hostname=self._hostname,
            connect_timeout=settings.connect_timeout,
            reply_timeout=settings.command_timeout,
        )
        try:
            await session.hello()
            await self._secure(session, host, job.domain)
            outcomes = await self._send(session, host, job)
        except HostRefused:
            await session.close()
            raise
        except BaseException:
            session.abort()
            raise
        await session.close()
        self._log.info(
            "delivery.transaction",
            queue_id=job.queue_id,
            host=host,
            address=address,
            tls=session.conn.tls_active,
            rcpts=len(job.recipients),
        )
        return outcomes

    async def _secure(self, session: SmtpSession, host: str, domain: str) -> None:
        """Opportunistic STARTTLS (RFC 3207, RFC 7435); for ``require_tls`` domains TLS with a verified
        certificate for the MX host's name, or no delivery to this host."""
        required = domain in self._require_tls
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
        try:
            conn.mail(
                sender,
                size=body.size,
                body="8BITMIME" if conn.supports("8BITMIME") else None,
                smtputf8=smtputf8,
            )
        except LocalProtocolError as exc:  # this server can never take it (over SIZE, no SMTPUTF8 ...)
            return [failed(recipient, exc, remote_mta=host) for recipient in recipients]
        mail, rcpts = await self._envelope(session, addresses)
        if not mail.is_positive:
            return [replied(recipient, mail, remote_mta=host) for recipient in recipients]
        accepted = [reply.is_positive for reply in rcpts]
        if not any(accepted):
            return [replied(r, reply, remote_mta=host) for r, reply in zip(recipients, rcpts, strict=True)]
        final = await self._send_body(session, body)
        return [
            replied(recipient, final if ok else reply, remote_mta=host)
            for recipient, reply, ok in zip(recipients, rcpts, accepted, strict=True)
        ]

    @staticmethod
    async def _envelope(session: SmtpSession, addresses: Sequence[Address]) -> tuple[Reply, list[Reply]]:
        """The replies to MAIL and to each RCPT: pipelined when offered (RFC 2920), else one by one."""
        conn = session.conn
        if conn.supports("PIPELINING"):
            for address in addresses:
                conn.rcpt(address)
            mail = (await session.reply()).reply
            return mail, [(await session.reply()).reply for _ in addresses]
        mail = (await session.reply()).reply
        if not mail.is_positive:
            return mail, []
        rcpts = []
        for address in addresses:
            conn.rcpt(address)
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
