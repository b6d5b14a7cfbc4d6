"""SASL exchanges for SMTP AUTH (RFC 4954) as pure state machines: PLAIN (RFC 4616) and LOGIN, and the
steps every exchange answers with (SCRAM-SHA-256's own exchange is in scram.py).

An exchange is fed the client's initial response and each later response (base64 text) and answers with
the next challenge, the credentials to check, or why the exchange is malformed. No I/O, no password check.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "MECHANISMS",
    "Acknowledgement",
    "Challenge",
    "Credentials",
    "Malformed",
    "SaslExchange",
    "ScramProof",
    "Step",
    "Unsupported",
    "Verified",
    "start_exchange",
]

# Offered after TLS only. SCRAM-SHA-256 (RFC 7677) is started by Authenticator.start_exchange: it needs the
# stored secrets. SCRAM-SHA-256-PLUS is not offered (no channel binding).
MECHANISMS = ("PLAIN", "LOGIN", "SCRAM-SHA-256")


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


@dataclass(frozen=True, slots=True, repr=False)
class ScramProof:
    """A SCRAM client-final message checked against the user's stored secrets (scram.py): ``valid`` says
    whether the proof matched. ``server_final`` (base64, "v=...") goes to the client only after the
    throttle let the login through (RFC 4954 4: in a 334, before the 235)."""

    username: str
    valid: bool
    server_final: str = ""

    def __repr__(self) -> str:
        return f"ScramProof(username={self.username!r}, valid={self.valid})"


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The client asked for a part of the mechanism that is not offered here (SCRAM channel binding)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Verified:
    """The exchange is complete and ``user`` (a mailbox address) is authenticated: answer 235."""

    user: str


Step = Challenge | Credentials | ScramProof | Verified | Unsupported | Malformed


class SaslExchange(Protocol):
    def step(self, response: str) -> Step: ...


def start_exchange(mechanism: str, initial_response: str | None) -> tuple[SaslExchange, Step]:
    """The exchange for PLAIN or LOGIN and its first step (SCRAM-SHA-256: Authenticator.start_exchange)."""
    name = mechanism.upper()
    if name not in ("PLAIN", "LOGIN"):
        raise ValueError(f"{mechanism} is not a password mechanism")
    exchange: _Plain | _Login = _Plain() if name == "PLAIN" else _Login()
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


class Acknowledgement:
    """RFC 4954 4: the server's additional data with success (SCRAM's server-final message) is sent in a 334;
    the client answers with an empty line, and only then is the login complete."""

    def __init__(self, user: str) -> None:
        self._user = user

    def step(self, response: str) -> Step:
        if response not in ("", "="):
            return Malformed("expected an empty response to the server's final SASL message")
        return Verified(self._user)
