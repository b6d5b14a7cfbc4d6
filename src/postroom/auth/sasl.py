"""SASL exchanges for SMTP AUTH (RFC 4954) as pure state machines: PLAIN (RFC 4616) and LOGIN.

An exchange is fed the client's initial response and each later response (base64 text) and answers with
the next challenge, the credentials to check, or why the exchange is malformed. No I/O, no password check.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

__all__ = ["MECHANISMS", "Challenge", "Credentials", "Malformed", "SaslExchange", "start_exchange"]

MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334 <text>`` (already base64) and feed the client's answer to ``step``."""

    text: str


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """What the client claims; ``password`` never appears in a repr or a log."""

    username: str
    password: str
    authzid: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Malformed:
    """The client's response cannot be understood (bad base64, missing fields)."""

    reason: str


Step = Challenge | Credentials | Malformed


class SaslExchange(Protocol):
    def step(self, response: str) -> Step: ...


def start_exchange(mechanism: str, initial_response: str | None) -> tuple[SaslExchange, Step]:
    """The exchange for ``mechanism`` (one of MECHANISMS) and its first step."""
    exchange: _Plain | _Login = _Plain() if mechanism.upper() == "PLAIN" else _Login()
    if initial_response is None:
        return exchange, exchange.first_challenge()
    return exchange, exchange.step(initial_response)


def _decode(response: str) -> str | None:
    if response == "=":  # RFC 4954 4: "=" is an empty initial response
        return ""
    try:
        return base64.b64decode(response.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


class _Plain:
    """RFC 4616: one message, authzid NUL authcid NUL passwd."""

    def first_challenge(self) -> Step:
        return Challenge("")

    def step(self, response: str) -> Step:
        text = _decode(response)
        if text is None:
            return Malformed("PLAIN response is not base64 UTF-8")
        parts = text.split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Malformed("PLAIN response needs authzid NUL user NUL password")
        return Credentials(username=parts[1], password=parts[2], authzid=parts[0])


class _Login:
    """The LOGIN mechanism (draft-murchison-sasl-login): username, then password, each base64."""

    _USERNAME = base64.b64encode(b"Username:").decode("ascii")
    _PASSWORD = base64.b64encode(b"Password:").decode("ascii")

    def __init__(self) -> None:
        self._username: str | None = None

    def first_challenge(self) -> Step:
        return Challenge(self._USERNAME)

    def step(self, response: str) -> Step:
        text = _decode(response)
        if text is None:
            return Malformed("LOGIN response is not base64 UTF-8")
        if self._username is None:
            if not text:
                return Malformed("LOGIN needs a username")
            self._username = text
            return Challenge(self._PASSWORD)
        if not text:
            return Malformed("LOGIN needs a password")
        return Credentials(username=self._username, password=text)
