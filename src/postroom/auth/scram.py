"""SCRAM-SHA-256 for SMTP AUTH (RFC 7677 on RFC 5802), with scramp: the secrets kept for a password, and the
server side of one exchange as a pure state machine. Not the throttle, not the replies, no I/O: the stored
secrets come through the lookup it is given. No channel binding: SCRAM-SHA-256-PLUS is not offered.

Theory of operation. The client opens with client-first ``n,,n=<user>,r=<client nonce>``; the exchange looks
the user up and answers server-first ``r=<client nonce + server nonce>,s=<salt>,i=<iterations>`` (a 334).
The client answers client-final ``c=biws,r=<nonce>,p=<proof>``; the exchange checks the proof against the
StoredKey (constant-time) and returns a ScramProof. Only if the caller's throttle lets the login through does
the client see server-final ``v=<server signature>`` (a 334, answered by an empty line, then 235): a client
locked out learns nothing from a right guess. A user who does not exist, or has no SCRAM secrets (created
before they were kept, see docs/authentication.md), gets a made-up salt that is the same for that name each
time and keys no proof can match, so the server-first message does not tell who exists.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from scramp import ScramException, ScramMechanism
from scramp.utils import ServerError

from postroom.auth.sasl import Challenge, Malformed, ScramProof, Step, Unsupported

__all__ = [
    "MAX_ITERATIONS",
    "MECHANISM",
    "MIN_ITERATIONS",
    "ScramExchange",
    "ScramSecrets",
    "make_secrets",
    "mock_secrets",
]

MECHANISM = "SCRAM-SHA-256"
MIN_ITERATIONS = 4096  # RFC 7677 4: the iteration count SHOULD be at least 4096
MAX_ITERATIONS = 10_000_000  # scramp's bound (clients refuse more: it would be a denial of service on them)
_SALT_BYTES = 32
_PREFIX = MECHANISM + "$"
# The client demanded channel binding ("p=" in its gs2 header), which this server does not do (RFC 5802 7).
_BINDING_ERRORS = frozenset(
    {ServerError.CHANNEL_BINDING_NOT_SUPPORTED, ServerError.UNSUPPORTED_CHANNEL_BINDING_TYPE}
)


@dataclass(frozen=True, slots=True, repr=False)
class ScramSecrets:
    """What the server keeps for one password (RFC 5802 3): enough to check a proof, never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def __repr__(self) -> str:
        return f"ScramSecrets(iterations={self.iterations}, keys=<hidden>)"

    def encode(self) -> str:
        """RFC 5803's form: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64)."""
        salt, stored, server = (base64.b64encode(v).decode("ascii") for v in self._parts())
        return f"{_PREFIX}{self.iterations}:{salt}${stored}:{server}"

    def _parts(self) -> tuple[bytes, bytes, bytes]:
        return self.salt, self.stored_key, self.server_key

    @classmethod
    def decode(cls, text: str) -> ScramSecrets:
        """The secrets from ``encode``'s form; ValueError when ``text`` is not in it."""
        if not text.startswith(_PREFIX):
            raise ValueError(f"not {MECHANISM} secrets")
        try:
            head, keys = text[len(_PREFIX) :].split("$")
            iterations, salt = head.split(":")
            stored, server = keys.split(":")
            parsed = cls(
                salt=base64.b64decode(salt, validate=True),
                iterations=int(iterations),
                stored_key=base64.b64decode(stored, validate=True),
                server_key=base64.b64decode(server, validate=True),
            )
        except (binascii.Error, ValueError):
            raise ValueError(f"malformed {MECHANISM} secrets") from None
        digest_size = hashlib.sha256().digest_size
        if not MIN_ITERATIONS <= parsed.iterations <= MAX_ITERATIONS or not parsed.salt:
            raise ValueError(f"malformed {MECHANISM} secrets")
        if len(parsed.stored_key) != digest_size or len(parsed.server_key) != digest_size:
            raise ValueError(f"malformed {MECHANISM} secrets")
        return parsed


def make_secrets(password: str, *, iterations: int, salt: bytes | None = None) -> ScramSecrets | None:
    """The secrets for ``password`` (SASLprep'd, RFC 4013, as clients do), or None when SASLprep refuses it
    (control characters, for one): such a password works with PLAIN and LOGIN only."""
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be {MIN_ITERATIONS}..{MAX_ITERATIONS}")
    try:
        salt, stored_key, server_key, count = ScramMechanism(MECHANISM).make_auth_info(
            password, iteration_count=iterations, salt=salt if salt is not None else _new_salt()
        )
    except ScramException:
        return None
    return ScramSecrets(salt=salt, iterations=count, stored_key=stored_key, server_key=server_key)


def _new_salt() -> bytes:
    return secrets.token_bytes(_SALT_BYTES)


def mock_secrets(username: str, *, key: bytes, iterations: int) -> ScramSecrets:
    """Secrets for a user who does not exist or has none (RFC 5802 9): the same salt for the same name each
    time under ``key``, and keys no proof can match (StoredKey is not the hash of any known ClientKey)."""
    name = username.encode("utf-8")

    def derive(label: bytes) -> bytes:
        return hmac.new(key, label + b"\0" + name, hashlib.sha256).digest()

    return ScramSecrets(
        salt=derive(b"salt"),
        iterations=iterations,
        stored_key=derive(b"stored"),
        server_key=derive(b"server"),
    )


class ScramExchange:
    """One SCRAM-SHA-256 exchange, server side; steps as in sasl.py (a SaslExchange)."""

    def __init__(
        self,
        *,
        lookup: Callable[[str], ScramSecrets | None],
        mock_key: bytes,
        mock_iterations: int,
        server_nonce: str | None = None,  # tests give RFC 7677's; else 144 random bits from `secrets`
    ) -> None:
        self._lookup = lookup
        self._mock_key = mock_key
        self._mock_iterations = mock_iterations
        nonce = server_nonce if server_nonce is not None else secrets.token_hex(18)
        self._server = ScramMechanism(MECHANISM).make_server(self._secrets_for, s_nonce=nonce)
        self._username = ""
        self._stage = "client-first"

    def first_challenge(self) -> Step:
        return Challenge("")  # RFC 4954 4: an empty challenge asks for the client's first message

    def step(self, response: str) -> Step:
        text = _decode(response)
        if text is None:
            self._stage = "done"
            return Malformed("SCRAM response is not base64 UTF-8")
        stage, self._stage = self._stage, "done"
        try:
            if stage == "client-first":
                self._server.set_client_first(text)
                challenge = Challenge(_encode(self._server.get_server_first()))
                self._stage = "client-final"
                return challenge
            if stage == "client-final":
                return self._final(text)
        except ScramException as exc:
            if exc.server_error is ServerError.NO_RESOURCES and exc.__cause__ is not None:
                raise exc.__cause__ from None  # the lookup failed: not the client's fault
            if exc.server_error in _BINDING_ERRORS:
                return Unsupported(f"SCRAM channel binding is not offered ({exc})")
            return Malformed(f"SCRAM {stage} message refused: {exc}")
        return Malformed("SCRAM exchange already finished")

    def _final(self, text: str) -> Step:
        try:
            self._server.set_client_final(text)
        except ScramException as exc:
            if exc.server_error is not ServerError.INVALID_PROOF:
                raise
            return ScramProof(self._username, valid=False)
        return ScramProof(self._username, valid=True, server_final=_encode(self._server.get_server_final()))

    def _secrets_for(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        self._username = username
        found = self._lookup(username)
        if found is None:
            found = mock_secrets(username, key=self._mock_key, iterations=self._mock_iterations)
        return found.salt, found.stored_key, found.server_key, found.iterations


def _decode(response: str) -> str | None:
    try:
        return base64.b64decode(response.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def _encode(message: str) -> str:
    return base64.b64encode(message.encode("utf-8")).decode("ascii")
