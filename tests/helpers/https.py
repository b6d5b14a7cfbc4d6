"""An HTTPS server on loopback that serves one MTA-STS policy file (RFC 8461 3.3), with a certificate from a
test CA; the answer's status, media type and body can be changed between requests."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import trustme

__all__ = ["PolicyServer"]


class PolicyServer(http.server.ThreadingHTTPServer):
    """Answers every GET with ``status``, ``content_type`` and ``body``; ``requests`` lists Host + path."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, body: str) -> None:
        super().__init__(("127.0.0.1", 0), _PolicyHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.body = body
        self.status = 200
        self.content_type = "text/plain"
        self.requests: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @classmethod
    @contextmanager
    def running(cls, ca: trustme.CA, hostname: str, body: str) -> Iterator[PolicyServer]:
        """Serve ``body`` with a certificate for ``hostname`` issued by ``ca`` until the block ends."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(hostname).configure_cert(context)
        server = cls(context, body)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield server
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


class _PolicyHandler(http.server.BaseHTTPRequestHandler):
    server: PolicyServer

    def do_GET(self) -> None:
        self.server.requests.append(f"{self.headers['Host']}{self.path}")
        body = self.server.body.encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", self.server.content_type)
        if self.server.status in (301, 302):
            self.send_header("Location", "https://elsewhere.test/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass
