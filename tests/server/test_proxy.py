"""The PROXY protocol: the parser (v1 text, v2 binary) fed bytes as a socket delivers them, then a real
server behind a pretend load balancer on loopback."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from postroom.server.proxy import V2_SIGNATURE, ProxyHeader, ProxyHeaderReader, ProxyProtocolError, encode_v2
from tests.e2e.conftest import add_accounts
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for
from tests.helpers.transcript import Transcript


def _read(*chunks: bytes) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    header = None
    for chunk in chunks:
        header = reader.feed(chunk)
    return header, reader.remaining


def test_v1_tcp4_gives_the_client_and_keeps_what_follows() -> None:
    header, rest = _read(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n")
    assert header == ProxyHeader(1, ("192.0.2.7", 56324), ("198.51.100.1", 25))
    assert rest == b"EHLO x\r\n"


def test_v1_tcp6_and_byte_by_byte() -> None:
    line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n"
    reader = ProxyHeaderReader()
    results = [reader.feed(line[i : i + 1]) for i in range(len(line))]
    assert results[:-1] == [None] * (len(line) - 1)
    assert results[-1] == ProxyHeader(1, ("2001:db8::7", 40000), ("2001:db8::1", 25))


def test_v1_unknown_keeps_the_connection_address() -> None:
    header, rest = _read(b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n")
    assert header == ProxyHeader(1, None)
    assert rest == b""


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client.example\r\n",  # no header at all
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",  # a field missing
        b"PROXY TCP4 2001:db8::7 198.51.100.1 1 25\r\n",  # family mismatch
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 25\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.7 198.51.100.1 025 25\r\n",  # leading zero
        b"PROXY TCP5 192.0.2.7 198.51.100.1 1 25\r\n",  # unknown protocol
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\n",  # LF alone
        b"PROXY TCP4 " + b"1" * 120,  # longer than 107 octets without CRLF
        b"proxy TCP4 192.0.2.7 198.51.100.1 1 25\r\n",  # case matters
    ],
)
def test_v1_malformed_is_an_error(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        _read(data)


def test_v2_tcp4_with_tlvs_and_trailing_smtp() -> None:
    tlv = b"\x04\x00\x03abc"  # PP2_TYPE_NOOP, ignored
    data = encode_v2(("203.0.113.9", 40001), ("198.51.100.1", 25), tlvs=tlv) + b"QUIT\r\n"
    header, rest = _read(data[:5], data[5:17], data[17:])
    assert header == ProxyHeader(2, ("203.0.113.9", 40001), ("198.51.100.1", 25))
    assert rest == b"QUIT\r\n"


def test_v2_tcp6() -> None:
    header, _ = _read(encode_v2(("2001:db8::9", 1), ("2001:db8::1", 25)))
    assert header == ProxyHeader(2, ("2001:db8::9", 1), ("2001:db8::1", 25))


def test_v2_local_keeps_the_proxy_address() -> None:
    header, rest = _read(encode_v2(None, None) + b"EHLO")
    assert header == ProxyHeader(2, None)
    assert rest == b"EHLO"


def test_v2_unspec_and_unix_keep_the_connection_address() -> None:
    unspec = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x00, 0)
    unix = V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, 216) + b"\x00" * 216
    assert _read(unspec)[0] == ProxyHeader(2, None)
    assert _read(unix)[0] == ProxyHeader(2, None)


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE + struct.pack("!BBH", 0x11, 0x11, 12) + b"\x00" * 12,  # version 1 in a v2 header
        V2_SIGNATURE + struct.pack("!BBH", 0x22, 0x11, 12) + b"\x00" * 12,  # command 2
        V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x41, 12) + b"\x00" * 12,  # family 4
        V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 8) + b"\x00" * 8,  # address block too short
        V2_SIGNATURE[:6] + b"X",  # a broken signature
    ],
)
def test_v2_malformed_is_an_error(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        _read(data)


def test_v2_waits_for_the_whole_block() -> None:
    data = encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2))
    reader = ProxyHeaderReader()
    assert reader.feed(data[:-1]) is None
    assert reader.feed(data[-1:]) == ProxyHeader(2, ("192.0.2.1", 1), ("192.0.2.2", 2))


def test_feeding_after_the_header_is_a_bug() -> None:
    reader = ProxyHeaderReader()
    reader.feed(encode_v2(None, None))
    with pytest.raises(ProxyProtocolError):
        reader.feed(b"x")


# --- a real server behind a (pretend) load balancer: real sockets, real v1 text and v2 binary headers ----

@contextmanager
def _proxied(tmp_path: Path, **policy: Any) -> Iterator[ServerThread]:
    """The MX listener behind a PROXY load balancer at 127.0.0.1 (only)."""
    sections: dict[str, Any] = {
        "smtp": {"relay_networks": ["198.51.100.0/24"], "max_connections_per_ip": 1},
        "policy": {
            "proxy_timeout": 1,
            **policy,
            "smtp": {"proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]},
        },
    }
    config = make_config(tmp_path, **sections)
    add_accounts(config)
    with server_thread(config) as running:
        yield running


def _v1(client: str) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 40000 25\r\n".encode()


def test_v1_client_address_reaches_received_and_the_log(tmp_path: Path) -> None:
    with _proxied(tmp_path) as server, Transcript(server.address) as t:
        t.send_raw(_v1("192.0.2.50"))
        t.expect("220 *")
        t.send("EHLO client.test")
        t.expect("250 *")
        t.send("MAIL FROM:<a@client.test>")
        t.expect("250 *")
        t.send("RCPT TO:<alice@postroom.test>")
        t.expect("250 *")
        t.send("RCPT TO:<bob@elsewhere.test>")  # 192.0.2.50 is not in relay_networks
        t.expect("554 5.7.1 Relay access denied")
        t.send("DATA")
        t.expect("354 *")
        t.send_raw(b"Subject: proxied\r\n\r\nhi\r\n.\r\n")
        t.expect("250 2.0.0 *")
        t.send("QUIT")
        t.expect("221 *")
        assert server.app is not None
        delivered = wait_for(lambda: maildir_messages(server.config, "alice@postroom.test"), what="delivery")
        assert b"[192.0.2.50]" in delivered[0].read_bytes().split(b"\r\n\r\n")[0]
        assert "client=192.0.2.50" in server.log_text
        assert "proxy.header" in server.log_text


def test_v2_client_in_relay_networks_may_relay(tmp_path: Path) -> None:
    with _proxied(tmp_path) as server, Transcript(server.address) as t:
        t.send_raw(encode_v2(("198.51.100.9", 40000), ("127.0.0.1", 25)))
        t.expect("220 *")
        t.send("EHLO client.test")
        t.expect("250 *")
        t.send("MAIL FROM:<a@client.test>")
        t.expect("250 *")
        t.send("RCPT TO:<bob@elsewhere.test>")
        t.expect("250 *")


def test_lists_and_limits_see_the_real_client(tmp_path: Path) -> None:
    with _proxied(tmp_path, deny=["203.0.113.0/24"]) as server:
        with Transcript(server.address) as t:
            t.send_raw(encode_v2(("203.0.113.7", 1), ("127.0.0.1", 25)))
            t.expect("554 5.7.1 Access denied: connections from [[]203.0.113.7] *")
            t.expect_closed()
        with Transcript(server.address) as first, Transcript(server.address) as second:
            first.send_raw(_v1("192.0.2.1"))
            first.expect("220 *")
            second.send_raw(_v1("192.0.2.1"))  # max_connections_per_ip = 1, counted per real client
            second.expect("421 4.7.0 Too many concurrent connections from your address*")
            with Transcript(server.address) as third:
                third.send_raw(_v1("192.0.2.2"))
                third.expect("220 *")


def test_v2_local_on_a_socket_keeps_the_proxy_address(tmp_path: Path) -> None:
    with _proxied(tmp_path) as server, Transcript(server.address) as t:
        t.send_raw(encode_v2(None, None))  # the load balancer's health check
        t.expect("220 *")
        t.send("QUIT")
        t.expect("221 *")
        assert "client=127.0.0.1" in server.log_text


@pytest.mark.parametrize(
    ("source", "data", "event"),
    [
        ("127.0.0.2", _v1("192.0.2.1"), "proxy.untrusted"),  # not the load balancer
        ("127.0.0.1", b"EHLO client.test\r\n", "proxy.malformed"),  # no header
        ("127.0.0.1", V2_SIGNATURE + b"\x21\x11\x00\x04garbage", "proxy.malformed"),  # v2 garbage
        ("127.0.0.1", b"", "proxy.timeout"),  # nothing at all (proxy_timeout = 1)
    ],
)
def test_no_valid_header_closes_without_a_reply(tmp_path: Path, source: str, data: bytes, event: str) -> None:
    with _proxied(tmp_path) as server:
        sock = socket.create_connection(server.address, timeout=10, source_address=(source, 0))
        with sock:
            if data:
                sock.sendall(data)
            try:
                received = sock.recv(1024)
            except ConnectionResetError:
                received = b""
        assert received == b""
        wait_for(lambda: event in server.log_text, what=event)
        with Transcript(server.address) as t:  # the next client is served as ever
            t.send_raw(_v1("192.0.2.3"))
            t.expect("220 *")
