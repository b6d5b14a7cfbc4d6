"""What one SMTP listener offers and the limits it enforces: the server connection's constructor argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ServerSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """What one listener offers and the limits it enforces."""

    hostname: str
    max_message_size: int = 52_428_800  # advertised as "SIZE n" (RFC 1870); 0 = unlimited
    max_command_line: int = 512  # octets with CRLF (RFC 5321 4.5.3.1.4)
    max_param_line: int = 2048  # MAIL, RCPT and AUTH lines, whose extensions raise the limit (4.5.3.1.4)
    max_recipients: int = 1000  # RFC 5321 4.5.3.1.8 asks for at least 100
    max_errors: int = 10
    long_lines: Literal["reject", "accept"] = "reject"  # DATA lines over 1000 octets (4.5.3.1.6)
    bare_line_endings: Literal["reject", "normalize"] = "reject"  # bare CR / LF in DATA
    starttls: bool = False
    auth_mechanisms: tuple[str, ...] = ()  # offered once TLS is active, or always with auth_without_tls
    auth_without_tls: bool = False
    chunking: bool = True  # CHUNKING + BINARYMIME (RFC 3030)
    implicit_tls: bool = False  # the connection is TLS from its first byte (RFC 8314 port 465)

    def auth_offered(self, *, tls: bool) -> bool:
        """AUTH is offered on this connection: mechanisms are configured, and TLS is active or not needed."""
        return bool(self.auth_mechanisms) and (tls or self.auth_without_tls)
