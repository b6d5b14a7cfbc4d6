"""A raw SMTP conversation for tests that must control every byte: send lines, expect reply patterns."""

from __future__ import annotations

import fnmatch
import socket
import time


class Transcript:
    """``t.send("MAIL FROM:<a@b>"); t.expect("250 2.1.0 *")``; every wait bounded by ``timeout``."""

    def __init__(self, address: tuple[str, int], *, timeout: float = 10.0, source: str | None = None) -> None:
        """``source``: the local address to connect from (any of 127.0.0.0/8 plays another client)."""
        self.sock = socket.create_connection(
            address, timeout=timeout, source_address=(source, 0) if source else None
        )
        self.timeout = timeout
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Transcript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("utf-8") + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> str:
        """One whole (possibly multi-line) reply, lines joined with \\n, without CRLF."""
        lines: list[str] = []
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\r\n" not in self._buffer:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no complete reply; got {self._buffer!r}")
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"connection closed; partial {self._buffer!r}, lines {lines}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\r\n", 1)
            line = raw.decode("utf-8")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def expect(self, pattern: str) -> str:
        """Read one reply; its last line must match the fnmatch ``pattern`` (e.g. "250 2.1.5 *")."""
        reply = self.read_reply()
        last = reply.split("\n")[-1]
        if not fnmatch.fnmatchcase(last, pattern):
            raise AssertionError(f"expected {pattern!r}, got {reply!r}")
        return reply

    def expect_closed(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return
            if not chunk:
                return
            self._buffer += chunk
        raise AssertionError("connection still open")
