"""The front door of a listener: everything between accept() and the 220 greeting.

Theory of operation: the listener makes a Gate per connection (when the listener has a FrontDoor). In order:
1. PROXY listener: the peer must be a trusted proxy; then the PROXY v1/v2 header is read (server/proxy.py)
   within ``proxy_timeout``. Untrusted peers, malformed or missing headers: logged and closed, no reply.
   From here on the client address is the one the header gave (LOCAL/UNKNOWN keep the proxy's).
2. Allow and deny lists (policy/connect.py): denied -> 554 5.7.1 as the greeting, closed.
3. Connection limits (server/limits.py): beyond -> 421 4.7.0 naming the limit. The gate holds the slot while
   it waits, so a flood waiting for its greeting is counted too.
4. Unless the client is allow-listed: the DNSBL/DNSWL lookups (policy/dnsbl.py) and the greet delay, side by
   side. A client that sends anything before the greeting -> 554 5.5.1, closed (postscreen's pregreet test).
   A listed client -> 554 5.7.1 naming the list, at once or (dnsbl_reject = "rcpt") at each RCPT.
5. Hand-over: the transport is given to a new Session (transport.set_protocol), which counts the connection
   in the limits again (the gate gives its slot back just before, in the same loop turn) and greets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import typing
from collections.abc import Callable

from postroom.policy.connect import Access
from postroom.policy.dnsbl import Listing
from postroom.server.admission import Admission, FrontDoor
from postroom.server.proxy import ProxyHeaderReader, ProxyProtocolError
from postroom.server.session import Session, SessionServices
from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["Gate"]


class Gate(asyncio.Protocol):
    """The protocol of one connection until its session takes over (or it is refused)."""

    def __init__(
        self,
        *,
        services: SessionServices,
        front_door: FrontDoor,
        listener: str,
        admit: Callable[[Admission], Session],
        on_close: Callable[[Gate], None],
    ) -> None:
        self._services = services
        self._door = front_door
        self._listener = listener
        self._admit = admit
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer_ip = ""
        self._client_ip = ""
        self._proxy: ProxyHeaderReader | None = None  # set while a PROXY header is awaited
        self._pending = b""  # bytes after the PROXY header, before the greeting
        self._watching = False  # greet delay running: any byte is talking first
        self._paused = False  # reading paused while DNS is asked (no greet delay to watch)
        self._counted = False  # holds a slot in the connection limits
        self._closed = False  # refused, handed over, or gone
        self._shutdown_requested = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Listing | None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        self._peer_ip = self._client_ip = str(peer[0]) if peer else "unknown"
        if self._shutdown_requested:  # accepted while the listener stopped
            self._refuse(replies.SHUTTING_DOWN, reason="server shutdown")
            return
        table = self._door.table
        if not table.proxy_protocol:
            self._screen()
            return
        if not _in_networks(self._peer_ip, table.trusted_proxies):
            self._drop("proxy.untrusted", "PROXY listener: peer is not a trusted proxy")
            return
        self._proxy = ProxyHeaderReader()
        self._timer = self._loop.call_later(self._door.proxy_timeout, self._on_proxy_timeout)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._proxy is not None:
            self._read_proxy_header(data)
        elif self._watching:
            self._refuse(replies.TALKED_BEFORE_GREETING, reason="talked before the greeting")
        else:
            self._pending += data

    def eof_received(self) -> bool | None:
        return None  # close: nobody to greet

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed and self._transport is None:  # handed over: the session owns the connection
            return
        self._finish()

    # --- shutdown (the listener asks as it does its sessions) ---------------------------------------------

    def request_shutdown(self) -> None:
        self._shutdown_requested = True
        if self._transport is None or self._closed:
            return
        if self._proxy is not None:  # not even the header yet: nothing to say to a proxy
            self._drop("proxy.shutdown", "server shutdown")
            return
        self._refuse(replies.SHUTTING_DOWN, reason="server shutdown")

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # --- the steps ------------------------------------------------------------------------------------------

    def _read_proxy_header(self, data: bytes) -> None:
        assert self._proxy is not None
        try:
            header = self._proxy.feed(data)
        except ProxyProtocolError as exc:
            self._drop("proxy.malformed", str(exc))
            return
        if header is None:
            return
        self._cancel_timer()
        self._pending, self._proxy = self._proxy.remaining, None
        if header.source is not None:
            self._client_ip = header.source[0]
        self._services.log.info(
            "proxy.header",
            listener=self._listener,
            proxy=self._peer_ip,
            client=self._client_ip,
            version=header.version,
        )
        self._screen()

    def _on_proxy_timeout(self) -> None:
        self._timer = None
        self._drop("proxy.timeout", f"no PROXY header within {self._door.proxy_timeout:g} s")

    def _screen(self) -> None:
        """Lists, limits, then the waiting checks (or straight to the session)."""
        door, ip = self._door, self._client_ip
        access = door.access.check(ip, self._listener)
        if access is Access.DENY:
            self._refuse(replies.client_denied(ip), reason="deny list")
            return
        refusal = self._services.limits.acquire(ip)
        if refusal is not None:
            self._refuse(refusal, reason="connection limit")
            return
        self._counted = True
        if access is Access.ALLOW:
            self._hand_over(allowlisted=True)
            return
        delay = door.table.greet_delay
        lookup = door.dnsbl is not None and door.dnsbl.active
        if delay > 0 and self._pending:  # sent right behind the PROXY header
            self._refuse(replies.TALKED_BEFORE_GREETING, reason="talked before the greeting")
            return
        if delay <= 0 and not lookup:
            self._hand_over()
            return
        self._watching = delay > 0
        if not self._watching and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()  # bytes wait in the kernel until the session reads them
        self._task = self._loop.create_task(self._wait(delay, lookup))
        self._task.add_done_callback(self._waited)

    async def _wait(self, delay: float, lookup: bool) -> Listing | None:
        checking = self._door.dnsbl.check(self._client_ip) if lookup and self._door.dnsbl else None
        if checking is None:
            await asyncio.sleep(delay)
            return None
        listing, _ = await asyncio.gather(checking, asyncio.sleep(delay))
        return listing

    def _waited(self, task: asyncio.Task[Listing | None]) -> None:
        self._task = None
        if self._closed or task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug; the client is not to blame: let it in (fail open), with the traceback
            self._services.log.failure("gate.error", exc, client=self._client_ip)
            self._hand_over()
            return
        listing = task.result()
        zone = listing.blocked_by if listing is not None else None
        if listing is not None and (listing.blocked_by or listing.allowed_by):
            self._services.log.info(
                "dnsbl.listed" if zone else "dnswl.listed",
                client=self._client_ip,
                zone=zone or listing.allowed_by,
                listener=self._listener,
            )
        if zone is None:
            self._hand_over()
            return
        reply = replies.client_blocklisted(self._client_ip, zone)
        if self._door.dnsbl_reject == "connect":
            self._refuse(reply, reason=f"listed in {zone}")
        else:
            self._hand_over(rcpt_refusal=reply)

    def _hand_over(self, *, allowlisted: bool = False, rcpt_refusal: Reply | None = None) -> None:
        transport = self._transport
        assert transport is not None
        self._closed = True
        self._cancel_timer()
        if self._counted:  # the session counts itself in the same loop turn: nobody can take the slot
            self._services.limits.release(self._client_ip)
            self._counted = False
        admission = Admission(
            client_ip=self._client_ip,
            proxy_ip=self._peer_ip if self._client_ip != self._peer_ip else None,
            allowlisted=allowlisted,
            rcpt_refusal=rcpt_refusal,
        )
        session = self._admit(admission)
        self._transport = None
        transport.set_protocol(session)
        session.connection_made(transport)
        if self._pending:
            pending, self._pending = self._pending, b""
            session.data_received(pending)
        if self._paused and not transport.is_closing():
            transport.resume_reading()
        self._on_close(self)

    # --- endings ----------------------------------------------------------------------------------------

    def _refuse(self, reply: Reply, *, reason: str) -> None:
        """The reply as the greeting, then close (RFC 5321 3.1 lets a server refuse with 554 here)."""
        self._services.maillog.refused_connection(
            client=self._client_ip, listener=self._listener, reply=str(reply), reason=reason
        )
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.write(reply.to_bytes())
            self._transport.close()

    def _drop(self, event: str, reason: str) -> None:
        """Close without a word: the peer is not someone we talk SMTP with (PROXY failures)."""
        self._services.log.warning(event, listener=self._listener, peer=self._peer_ip, reason=reason)
        self._closed = True
        self._cancel_timer()
        if self._transport is not None:
            self._transport.close()

    def _finish(self) -> None:
        self._closed = True
        self._cancel_timer()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._counted:
            self._services.limits.release(self._client_ip)
            self._counted = False
        self._transport = None
        self._on_close(self)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _in_networks(ip: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
