"""A real DNS server on loopback for tests: answers from the zone a test gives it, NXDOMAIN for the rest.

It never forwards a query anywhere (maddy's mock DNS), so a test that forgets a record fails instead of
reaching the Internet. UDP and TCP share one kernel-chosen port; UDP answers over 512 octets (or the EDNS
size) are truncated so that clients retry over TCP, as with a real server. dnslib does the wire format; an
asyncio loop in one background thread does the serving, so a delayed answer delays nothing else.

    with DnsServer() as dns:
        dns.add("example.test", "MX", "10 mx1.example.test.").add("mx1.example.test", "A", "127.0.0.1")
        config = make_config(tmp_path, dns={"nameservers": [dns.address]})
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, cast

import dns.name
import dns.reversename
from dnslib import (
    AAAA,
    CNAME,
    MX,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    TXT,
    A,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSRecord,
)

__all__ = ["DnsServer", "Query"]

_UDP_LIMIT = 512  # RFC 1035 4.2.1, unless the query's EDNS OPT record offers more
_MAX_CNAME_CHAIN = 8
_TIMEOUT = 5.0  # bound on starting and stopping the server


@dataclass(frozen=True, slots=True)
class Query:
    """One question the server received: the name (lower case, no final dot), its type, and the transport."""

    name: str
    rtype: str
    transport: Literal["udp", "tcp"]


def _absolute(name: str) -> str:
    """A zone key: lower-case A-labels with the final dot ("Bücher.Test" -> "xn--bcher-kva.test.")."""
    return dns.name.from_text(name).to_text().lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _character_strings(value: str | Sequence[str]) -> list[bytes]:
    """TXT data: a string is split every 255 octets (as zone files split DKIM keys); a list is kept as is."""
    if isinstance(value, str):
        data = value.encode()
        return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    strings = [item.encode() for item in value]
    if any(len(item) > 255 for item in strings):
        raise ValueError("a TXT character-string holds at most 255 octets")
    return strings


def _rdata(name: str, rtype: str, value: str | Sequence[str], ttl: int) -> Any:
    if rtype == "TXT":
        return TXT(_character_strings(value))
    if not isinstance(value, str):
        raise TypeError(f"{rtype} value must be a string")
    if rtype == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return AAAA(str(ipaddress.IPv6Address(value)))
    if rtype == "MX":
        preference, exchange = value.split()
        return MX(_absolute(exchange), int(preference))
    if rtype in ("CNAME", "PTR", "NS"):
        return {"CNAME": CNAME, "PTR": PTR, "NS": NS}[rtype](_absolute(value))
    # Anything else (TLSA, SRV, CAA, SOA ...) in zone-file syntax: "3 1 1 ab12...".
    return RR.fromZone(f"{name} {ttl} IN {rtype} {value}")[0].rdata


class DnsServer:
    """A loopback DNS server for one test (or one module): start it, give it records, point postroom at it."""

    def __init__(self, *, host: str = "127.0.0.1", negative_ttl: int = 0) -> None:
        self.host = host
        self.negative_ttl = negative_ttl  # the SOA minimum of "no such name/record" answers (RFC 2308)
        self._port: int | None = None
        self._lock = threading.Lock()  # guards the zone and the query log: tests write, the server reads
        self._records: dict[str, list[RR]] = {}
        self._failing: set[str] = set()
        self._delays: dict[str, float] = {}
        self._queries: list[Query] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: list[BaseException] = []  # raised by stop(): a broken helper must fail the test

    # -- where it listens ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the DNS server is not running")
        return self._port

    @property
    def address(self) -> str:
        """ "127.0.0.1:PORT", as written in ``[dns] nameservers``."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def nameserver(self) -> tuple[str, int]:
        """(host, port), as held by ``DnsSettings.nameservers``."""
        return (self.host, self.port)

    # -- the zone ---------------------------------------------------------------------------------------

    def add(self, name: str, rtype: str, value: str | Sequence[str], *, ttl: int = 0) -> DnsServer:
        """Add one record: ``add("example.test", "MX", "10 mx1.example.test.")``; names are absolute.

        The TTL is 0 unless given, so that resolvers (postroom's caches) ask again and a test may change its
        zone as it goes; a test of caching gives a TTL.

        A PTR may be added under the IP address itself: ``add("192.0.2.1", "PTR", "mx.example.test")``.
        A TXT value is the text itself, no quotes; over 255 octets it is split into character-strings.
        """
        rtype = rtype.upper()
        if rtype == "PTR" and _is_ip(name):
            name = dns.reversename.from_address(name).to_text()
        key = _absolute(name)
        record = RR(DNSLabel(key), getattr(QTYPE, rtype), rdata=_rdata(key, rtype, value, ttl), ttl=ttl)
        with self._lock:
            self._records.setdefault(key, []).append(record)
        return self

    def remove(self, name: str, rtype: str | None = None) -> DnsServer:
        """Forget the records of ``name`` (of one type, or all of them)."""
        key = _absolute(name)
        with self._lock:
            kept = [rr for rr in self._records.get(key, []) if rtype and QTYPE[rr.rtype] != rtype.upper()]
            if kept:
                self._records[key] = kept
            else:
                self._records.pop(key, None)
        return self

    def fail(self, name: str) -> DnsServer:
        """Answer SERVFAIL for every question about ``name`` (a broken authoritative server)."""
        with self._lock:
            self._failing.add(_absolute(name))
        return self

    def delay(self, name: str, seconds: float) -> DnsServer:
        """Hold answers about ``name`` for ``seconds`` (other names are answered at once)."""
        with self._lock:
            self._delays[_absolute(name)] = seconds
        return self

    def reset(self) -> None:
        """Back to an empty zone, no failures, no delays, no queries seen (for a server shared by tests)."""
        with self._lock:
            self._records.clear()
            self._failing.clear()
            self._delays.clear()
            self._queries.clear()

    @property
    def queries(self) -> tuple[Query, ...]:
        """Every question received so far, in order."""
        with self._lock:
            return tuple(self._queries)

    # -- start and stop ---------------------------------------------------------------------------------

    def start(self) -> DnsServer:
        if self._thread is not None:
            raise RuntimeError("the DNS server is already running")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name="test-dns-server", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._bind(), loop).result(timeout=_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the sockets, cancel delayed answers, end the thread; bounded by a few seconds."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=_TIMEOUT)
            self._loop = self._thread = None
            self._port = None
        if thread.is_alive():
            raise RuntimeError("the DNS server thread did not stop")
        if self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"the DNS server failed {len(errors)} time(s)") from errors[0]

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _bind(self) -> None:
        """UDP on a kernel-chosen port, then TCP on the same port; try again if that TCP port is taken."""
        loop = asyncio.get_running_loop()
        for _ in range(50):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as exc:
                udp.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._udp, self._port = udp, port
            return
        raise RuntimeError("no port free for both UDP and TCP")

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        await asyncio.sleep(0)  # let the transports' close callbacks run before the loop stops

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._errors.append(error)

    # -- serving ----------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """RFC 1035 4.2.2: each message is preceded by its length in two octets."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                response = await self._respond(await reader.readexactly(length), "tcp")
                if response is None:
                    break
                writer.write(len(response).to_bytes(2, "big") + response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, as clients do after their answer
        except Exception as exc:
            self._errors.append(exc)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _respond(self, data: bytes, transport: Literal["udp", "tcp"]) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return None  # not DNS: ignore it, as a server under attack would
        if len(request.questions) != 1:
            reply = request.reply()
            reply.header.rcode = RCODE.FORMERR
            return bytes(reply.pack())
        name, qtype = str(request.q.qname).lower(), request.q.qtype
        with self._lock:
            self._queries.append(Query(name.rstrip(".") or ".", QTYPE.get(qtype, str(qtype)), transport))
            delay = self._delays.get(name, 0.0)
        if delay:
            await asyncio.sleep(delay)
        reply = self._answer(request, name, qtype)
        packed = bytes(reply.pack())
        if transport == "udp" and len(packed) > _udp_limit(request):
            # RFC 2181 9: set TC and keep the question, so the client asks again over TCP.
            header = DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1)
            packed = bytes(DNSRecord(header, q=request.q).pack())
        return packed

    def _answer(self, request: DNSRecord, name: str, qtype: int) -> DNSRecord:
        reply = request.reply()
        with self._lock:
            if name in self._failing:
                reply.header.rcode = RCODE.SERVFAIL
                return reply
            answers, rcode = self._lookup(name, qtype)
        for answer in answers:
            reply.add_answer(answer)
        reply.header.rcode = rcode
        if rcode == RCODE.NXDOMAIN or (rcode == RCODE.NOERROR and not answers):
            reply.add_auth(_negative_soa(name, self.negative_ttl))  # RFC 2308: how long "no" may be cached
        return reply

    def _lookup(self, name: str, qtype: int) -> tuple[list[RR], int]:
        """The answer records and rcode for a question, following CNAMEs inside the zone. Holds the lock."""
        answers: list[RR] = []
        for _ in range(_MAX_CNAME_CHAIN):
            records = self._records.get(name)
            if records is None:
                # RFC 8020: a name with names below it exists (an empty non-terminal): NODATA, not NXDOMAIN.
                exists = any(other.endswith("." + name) for other in self._records)
                return answers, RCODE.NOERROR if exists else RCODE.NXDOMAIN
            matching = [rr for rr in records if qtype in (rr.rtype, QTYPE.ANY)]
            if matching:
                return answers + matching, RCODE.NOERROR
            cnames = [rr for rr in records if rr.rtype == QTYPE.CNAME]
            if not cnames:
                return answers, RCODE.NOERROR  # NODATA
            answers.append(cnames[0])
            name = str(cnames[0].rdata.label).lower()
        return answers, RCODE.SERVFAIL  # a CNAME loop


def _negative_soa(name: str, ttl: int) -> RR:
    """An SOA for a negative answer, owned by the name's top-level label, with TTL and minimum ``ttl``."""
    apex = name.rstrip(".").rpartition(".")[2] + "."
    soa = SOA(mname=f"ns.{apex}", rname=f"hostmaster.{apex}", times=(1, 60, 60, 60, ttl))
    return RR(DNSLabel(apex), QTYPE.SOA, rdata=soa, ttl=ttl)


def _udp_limit(request: DNSRecord) -> int:
    """512 octets, or what the client's EDNS OPT record (RFC 6891) says it can take."""
    for record in request.ar:
        if record.rtype == QTYPE.OPT:
            return max(_UDP_LIMIT, int(record.rclass))
    return _UDP_LIMIT


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._server._spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        response = await self._server._respond(data, "udp")
        if response is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(response, addr)
