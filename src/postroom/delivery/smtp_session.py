"""One outbound SMTP connection: asyncio streams driving the sans-I/O ClientConnection, every wait bounded.

It moves bytes and hands back replies; it does not choose hosts, decide outcomes or read spool files (see
remote.py). The TLS upgrade after STARTTLS happens here, on the same stream (RFC 3207).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl

from postroom.smtp.client import ClientConnection, ClientReply, ClientSettings
from postroom.smtp.errors import SmtpError
from postroom.smtp.events import NEED_DATA
from postroom.smtp.types import Reply

__all__ = ["HostRefused", "SmtpSession"]

_READ = 65536


class HostRefused(Exception):
    """The host would not start a transaction (greeting, EHLO/HELO or required TLS): try the next one."""

    def __init__(self, reply: Reply | None, reason: str) -> None:
        super().__init__(reason if reply is None else f"{reason}: {reply}")
        self.reply = reply


class SmtpSession:
    """A connected client; ``open`` connects and reads the greeting, ``close`` says QUIT and hangs up."""

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: ClientConnection,
        timeout: float,
    ) -> None:
        self.conn = conn
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self.messages = 0  # transactions carried (connection reuse counts them)

    @classmethod
    async def open(
        cls, *, address: str, port: int, hostname: str, connect_timeout: float, reply_timeout: float
    ) -> SmtpSession:
        """Connects and reads the 220 greeting; raises OSError/TimeoutError, or HostRefused for a non-2xx."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), connect_timeout)
        session = cls(
            reader=reader,
            writer=writer,
            conn=ClientConnection(settings=ClientSettings(local_hostname=hostname)),
            timeout=reply_timeout,
        )
        try:
            greeting = await session.reply()
        except BaseException:
            session.abort()
            raise
        if not greeting.reply.is_positive:
            await session.close()
            raise HostRefused(greeting.reply, "greeting refused")
        return session

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self._timeout)

    async def reply(self) -> ClientReply:
        """Sends what is queued, then reads the next reply (raises RemoteProtocolError, TimeoutError)."""
        await self.flush()
        while True:
            answer = self.conn.next_reply()
            if answer is not NEED_DATA:
                assert isinstance(answer, ClientReply)
                return answer
            data = await asyncio.wait_for(self._reader.read(_READ), self._timeout)
            self.conn.receive_data(data)

    async def hello(self) -> None:
        """EHLO, or HELO when EHLO is refused (RFC 5321 3.2); raises HostRefused when neither is taken."""
        self.conn.ehlo()
        reply = (await self.reply()).reply
        if reply.is_positive:
            return
        if self.conn.closed:
            raise HostRefused(reply, "EHLO refused")
        self.conn.helo()
        reply = (await self.reply()).reply
        if not reply.is_positive:
            raise HostRefused(reply, "HELO refused")

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> bool:
        """STARTTLS and the handshake, then EHLO again. False when the server refused STARTTLS."""
        self.conn.starttls()
        reply = (await self.reply()).reply
        if not reply.is_positive:
            return False
        await asyncio.wait_for(
            self._writer.start_tls(context, server_hostname=server_hostname or None), self._timeout
        )
        self.conn.tls_started()
        await self.hello()
        return True

    async def login(self, user: str, password: str) -> Reply:
        """AUTH PLAIN (RFC 4616) when offered, else AUTH LOGIN; the final reply (235 when it worked)."""
        offered = self.conn.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in offered:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
            self.conn.auth("PLAIN", token)
            return (await self.reply()).reply
        self.conn.auth("LOGIN")
        reply = (await self.reply()).reply
        for answer in (user, password):
            if reply.code != 334:
                return reply
            self.conn.auth_response(base64.b64encode(answer.encode()).decode("ascii"))
            reply = (await self.reply()).reply
        return reply

    async def reset(self) -> bool:
        """RSET before reusing the connection for another message (RFC 5321 4.1.1.5); False when the
        server refused it or is gone (the session is then aborted: open a new one)."""
        try:
            if not self.conn.closed and not self.conn.awaiting_replies:
                self.conn.rset()
                if (await self.reply()).reply.is_positive:
                    return True
        except (OSError, TimeoutError, SmtpError):
            pass
        self.abort()
        return False

    async def close(self) -> None:
        """QUIT when the state allows it (its reply is read but does not matter), then close."""
        with contextlib.suppress(OSError, TimeoutError, SmtpError):  # the peer may be gone; we leave anyway
            if not self.conn.closed and not self.conn.awaiting_replies:
                self.conn.quit()
                await self.reply()
        self.abort()

    def abort(self) -> None:
        self._writer.close()
