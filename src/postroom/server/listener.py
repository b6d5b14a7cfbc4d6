"""asyncio listeners: bind the configured addresses, make one Session per connection, and shut down
gracefully (stop accepting, let transactions finish up to a bound, then close what is left)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from postroom.config.schema import ListenAddress
from postroom.server.session import Session, SessionServices

__all__ = ["SmtpListener"]


class SmtpListener:
    """One named listener (e.g. "smtp") on one or more addresses."""

    def __init__(
        self,
        *,
        name: str,
        addresses: tuple[ListenAddress, ...],
        services: SessionServices,
        implicit_tls: ssl.SSLContext | None = None,
    ):
        self.name = name
        self._implicit_tls = implicit_tls
        self._addresses = addresses
        self._services = services
        self._servers: list[asyncio.Server] = []
        self._sessions: set[Session] = set()
        self._drained = asyncio.Event()
        self._stopping = False
        self.bound: list[tuple[str, int]] = []

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every address; returns the bound (host, port) pairs (real ports when 0 was asked for)."""
        loop = asyncio.get_running_loop()
        for address in self._addresses:
            server = await loop.create_server(
                self._make_session,
                host=address.host,
                port=address.port,
                reuse_address=True,
                backlog=1024,
                ssl=self._implicit_tls,
                ssl_handshake_timeout=30 if self._implicit_tls is not None else None,
                family=socket.AF_INET6 if ":" in address.host else socket.AF_INET,
            )
            self._servers.append(server)
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.bound.append((host, port))
        return self.bound

    def _make_session(self) -> Session:
        session = Session(services=self._services, listener=self.name, on_close=self._session_closed)
        self._sessions.add(session)
        if self._stopping:  # accepted just as we stopped: it is told 421 and closed at once
            session.request_shutdown()
        return session

    def _session_closed(self, session: Session) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._drained.set()

    async def _wait_drained(self, seconds: float) -> None:
        if self._sessions:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), seconds)

    async def stop(self, *, grace: float) -> None:
        """Stop accepting; ask sessions to close when idle; after ``grace`` seconds abort the rest."""
        self._stopping = True
        for server in self._servers:
            server.close()
        for session in list(self._sessions):
            session.request_shutdown()
        await self._wait_drained(grace)
        for session in list(self._sessions):
            session.abort()
        await self._wait_drained(1.0)  # let the aborted transports run connection_lost: sockets closed
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
