"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-I/O: bytes in, the real
client address out. No sockets here; the gate feeds what it reads and decides whom to believe.

Theory of operation: a load balancer that speaks PROXY sends one header before anything else on the
connection. Version 1 is a text line, "PROXY TCP4 <src> <dst> <sport> <dport>\\r\\n" (at most 107 octets;
"PROXY UNKNOWN ...\\r\\n" when the proxy does not know). Version 2 is binary: a 12-octet signature, a
version/command octet (0x20 LOCAL, 0x21 PROXY), a family/transport octet, a 16-bit length, the addresses,
then TLVs (ignored here). LOCAL (the proxy's own health check), UNKNOWN, UNSPEC and UNIX addresses keep the
connection's own endpoints. Anything else that is not exactly a header is an error: the connection is not
for us (spec 2.1: never guess, never fall back to reading it as the next protocol).
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

__all__ = ["V2_SIGNATURE", "ProxyHeader", "ProxyHeaderReader", "ProxyProtocolError", "encode_v2"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MAX = 107  # spec 2.1: the longest TCP6 line, CRLF included
_V2_FIXED = 16  # signature, version/command, family/transport, length
_INET, _INET6 = 0x1, 0x2
_STREAM = 0x1


class ProxyProtocolError(Exception):
    """Bytes that are not a valid PROXY header (the reason is for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. ``source`` is the real client (None: keep the connection's own peer address)."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None = None


class _State(enum.Enum):
    WAITING = "waiting"
    DONE = "done"


class ProxyHeaderReader:
    """Feed bytes until ``feed`` returns the header; ``remaining`` then holds what followed it (SMTP)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._state = _State.WAITING
        self.remaining = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """The header once complete, None while more bytes are needed; raises ProxyProtocolError."""
        if self._state is _State.DONE:
            raise ProxyProtocolError("header already read")
        self._buffer += data
        buffer = self._buffer
        if buffer.startswith(V2_SIGNATURE):
            return self._finish(*_parse_v2(buffer))
        if buffer.startswith(_V1_PREFIX):
            return self._finish(*_parse_v1(buffer))
        if not (V2_SIGNATURE.startswith(buffer) or _V1_PREFIX.startswith(buffer)):
            raise ProxyProtocolError(f"no PROXY header: starts with {buffer[:16]!r}")
        return None

    def _finish(self, header: ProxyHeader | None, used: int) -> ProxyHeader | None:
        if header is None:
            return None
        self._state = _State.DONE
        self.remaining, self._buffer = self._buffer[used:], b""
        return header


def _parse_v1(buffer: bytes) -> tuple[ProxyHeader | None, int]:
    end = buffer.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(buffer) >= _V1_MAX or b"\n" in buffer:
            raise ProxyProtocolError("PROXY v1 line too long or without CRLF")
        return None, 0
    try:
        line = buffer[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None), end + 2  # spec 2.1: the rest of the line is ignored
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 line {line!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = (_v1_address(parts[2], version), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], version), _v1_port(parts[5]))
    return ProxyHeader(1, source, destination), end + 2


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} does not match TCP{version}")
    return str(address)


def _v1_port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {text!r} is not 0..65535")
    return int(text)


def _parse_v2(buffer: bytes) -> tuple[ProxyHeader | None, int]:
    if len(buffer) < _V2_FIXED:
        return None, 0
    version_command, family_transport, length = struct.unpack("!BBH", buffer[12:16])
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 with version {version_command >> 4}")
    command = version_command & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2 with unknown command {command}")
    total = _V2_FIXED + length
    if len(buffer) < total:
        return None, 0
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError(f"PROXY v2 with unknown family/transport {family_transport:#04x}")
    if command == 0:  # LOCAL: the proxy's own connection (a health check); the block is discarded
        return ProxyHeader(2, None), total
    block = buffer[_V2_FIXED:total]
    if transport != _STREAM or family not in (_INET, _INET6):
        return ProxyHeader(2, None), total  # UNSPEC or UNIX: the real endpoints are used (spec 2.2)
    size = 4 if family == _INET else 16
    if len(block) < 2 * size + 4:
        raise ProxyProtocolError(f"PROXY v2 address block of {len(block)} octets is too short")
    source_ip = ipaddress.ip_address(block[:size])
    destination_ip = ipaddress.ip_address(block[size : 2 * size])
    source_port, destination_port = struct.unpack("!HH", block[2 * size : 2 * size + 4])
    return (
        ProxyHeader(2, (str(source_ip), source_port), (str(destination_ip), destination_port)),
        total,
    )


def encode_v2(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, *, tlvs: bytes = b""
) -> bytes:
    """A v2 header: PROXY over TCP for two addresses of one family, or LOCAL when ``source`` is None.
    (What a load balancer sends; used by tests and by anything of ours that fronts a postroom.)"""
    if source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(tlvs)) + tlvs
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("source and destination must be of one address family")
    family = _INET if src.version == 4 else _INET6
    block = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlvs
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family << 4 | _STREAM, len(block)) + block
