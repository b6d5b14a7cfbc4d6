"""asyncio listeners: bind the configured addresses, make one Session per connection (behind a Gate when the
listener has a front door: lists, DNSBL, PROXY, greet delay), and shut down gracefully (stop accepting, let
transactions finish up to a bound, then close what is left)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import Sequence

from postroom.config.schema import ListenAddress
from postroom.server.admission import Admission, FrontDoor
from postroom.server.gate import Gate
from postroom.server.session import Session, SessionServices

__all__ = ["BACKLOG", "SmtpListener", "socket_family"]

BACKLOG = 1024  # connections the kernel holds for us while the loop is busy


def socket_family(host: str) -> socket.AddressFamily:
    """The address family of a configured listen host (an IP literal, or "localhost": IPv4)."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
        self._sessions: set[Session | Gate] = set()  # gates too: a flood waiting for its greeting counts
        self._drained = asyncio.Event()
        self._stopping = False
        self.bound: list[tuple[str, int]] = []

    @property
    def services(self) -> SessionServices:
        """What sessions made from now on are given."""
        return self._services

    def set_services(self, services: SessionServices) -> None:
        """Give ``services`` to the sessions made from now on (a config reload); open ones keep theirs."""
        self._services = services

    def set_front_door(self, front_door: FrontDoor) -> None:
        """Check every new connection at this door (lists, DNSBL, PROXY, greet delay) before its session."""
        self._services = dataclasses.replace(self._services, front_door=front_door)

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def start(self, sockets: Sequence[socket.socket] | None = None) -> list[tuple[str, int]]:
        """Bind every address, or serve ``sockets`` bound already (a worker's, see app/workers.py); returns
        the bound (host, port) pairs (real ports when 0 was asked for)."""
        loop = asyncio.get_running_loop()
        handshake = 30 if self._implicit_tls is not None else None
        for sock in sockets or ():
            server = await loop.create_server(
                self._make_session,
                sock=sock,
                backlog=BACKLOG,
                ssl=self._implicit_tls,
                ssl_handshake_timeout=handshake,
            )
            self._servers.append(server)
        for address in self._addresses if sockets is None else ():
            server = await loop.create_server(
                self._make_session,
                host=address.host,
                port=address.port,
                reuse_address=True,
                backlog=BACKLOG,
                ssl=self._implicit_tls,
                ssl_handshake_timeout=handshake,
                family=socket_family(address.host),
            )
            self._servers.append(server)
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                self.bound.append((host, port))
        return self.bound

    def _make_session(self, admission: Admission | None = None) -> Session | Gate:
        front_door = self._services.front_door
        connection: Session | Gate
        if front_door is not None and admission is None:
            connection = Gate(
                services=self._services,
                front_door=front_door,
                listener=self.name,
                admit=self._admit,
                on_close=self._session_closed,
            )
        else:
            connection = Session(
                services=self._services,
                listener=self.name,
                on_close=self._session_closed,
                admission=admission,
            )
        self._sessions.add(connection)
        if self._stopping:  # accepted just as we stopped: it is told 421 and closed at once
            connection.request_shutdown()
        return connection

    def _admit(self, admission: Admission) -> Session:
        """The gate let a client in: its session (added before the gate leaves, so draining waits for it)."""
        session = self._make_session(admission)
        assert isinstance(session, Session)
        return session

    def _session_closed(self, session: Session | Gate) -> None:
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
