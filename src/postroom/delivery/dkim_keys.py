"""DKIM keys on disk and the DNS TXT record that publishes each one (RFC 6376 3.6, RFC 8463).

A key lives at ``<directory>/<domain>/<selector>.pem`` (mode 0600, written atomically with fsync): RSA as
PKCS#1 PEM (what opendkim and dkimpy read), ed25519 as PKCS#8 PEM. This module makes, reads and describes
keys; it signs nothing (dkim_sign.py) and looks nothing up in the DNS.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroom.dns.deliverability import DkimExpectation

__all__ = [
    "Algorithm",
    "DkimKey",
    "DkimKeyError",
    "DkimKeys",
    "normalize_domain",
    "record_public_key",
    "zone_strings",
]

Algorithm = Literal["rsa", "ed25519"]

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers must not accept smaller keys
_MAX_RSA_BITS = 8192
_TXT_STRING = 255  # RFC 1035 3.3: one character-string holds at most 255 octets


class DkimKeyError(Exception):
    """A key that cannot be made, found or read; the message is one sentence for the operator."""


def normalize_domain(domain: str) -> str:
    """The domain in lower-case A-labels without a final dot; DkimKeyError when it is not a domain name
    (it becomes a folder name, so nothing like '..' or '/' may pass)."""
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        raise DkimKeyError(f"{domain!r} is not a domain name") from None
    labels = ascii_name.split(".")
    if not ascii_name or len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise DkimKeyError(f"{domain!r} is not a domain name")
    return ascii_name


def _selector(selector: str) -> str:
    text = selector.strip().lower()
    if not text or not all(_LABEL.match(label) for label in text.split(".")):
        raise DkimKeyError(f"{selector!r} is not a valid selector (letters, digits, '-', '_' and dots)")
    return text


def zone_strings(value: str) -> list[str]:
    """``value`` cut into character-strings of at most 255 octets, as a zone file needs for long TXT data."""
    data = value.encode("ascii")
    return [data[i : i + _TXT_STRING].decode("ascii") for i in range(0, len(data), _TXT_STRING)] or [""]


def record_public_key(value: str) -> str | None:
    """The p= tag of a published DKIM key record (RFC 6376 3.6.1; whitespace in it removed), or None.
    Lets `postroom check` compare what the DNS holds with ``DkimKey.public_key``."""
    for tag in value.split(";"):
        name, sep, tag_value = tag.partition("=")
        if sep and name.strip() == "p":
            return "".join(tag_value.split())
    return None


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One signing key: where it is published and the secret to sign with (kept out of repr)."""

    domain: str
    selector: str
    algorithm: Algorithm
    public_key: str  # the p= value: base64 SubjectPublicKeyInfo (rsa) or the raw key (ed25519, RFC 8463)
    private_pem: bytes = field(repr=False)

    @property
    def record_name(self) -> str:
        """Where the TXT record goes: ``<selector>._domainkey.<domain>`` (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_value(self) -> str:
        """The TXT record's text, as one string (a zone file splits it: ``zone_strings``)."""
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key}"


def _describe(domain: str, selector: str, pem: bytes) -> DkimKey:
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise DkimKeyError(
            f"the DKIM key of {domain} (selector {selector}) is not a readable PEM key: {exc}"
        ) from None
    if isinstance(private, rsa.RSAPrivateKey):
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return DkimKey(domain, selector, "rsa", base64.b64encode(spki).decode("ascii"), pem)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DkimKey(domain, selector, "ed25519", base64.b64encode(raw).decode("ascii"), pem)
    raise DkimKeyError(f"the DKIM key of {domain} (selector {selector}) is neither RSA nor ed25519")


def _new_pem(algorithm: Algorithm, bits: int) -> bytes:
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    if not _MIN_RSA_BITS <= bits <= _MAX_RSA_BITS:
        raise DkimKeyError(f"RSA keys must have {_MIN_RSA_BITS} to {_MAX_RSA_BITS} bits, not {bits}")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class DkimKeys:
    """The key store: ``<directory>/<domain>/<selector>.pem``; ``selector`` is the one used when none is
    given (the configured ``[dkim] selector``)."""

    def __init__(self, directory: Path, *, selector: str = "postroom") -> None:
        self.directory = directory
        self.selector = _selector(selector)

    def path(self, domain: str, selector: str | None = None) -> Path:
        """The key file of ``domain`` (it may not exist)."""
        return self.directory / normalize_domain(domain) / f"{_selector(selector or self.selector)}.pem"

    def exists(self, domain: str, selector: str | None = None) -> bool:
        return self.path(domain, selector).is_file()

    def generate(
        self,
        domain: str,
        selector: str | None = None,
        algorithm: Algorithm = "rsa",
        *,
        bits: int = 2048,
        force: bool = False,
    ) -> DkimKey:
        """Make a new key and store it; an existing key is replaced only with ``force``."""
        path = self.path(domain, selector)
        if path.exists() and not force:
            raise DkimKeyError(
                f"{domain} already has a DKIM key with selector {path.stem} ({path}); --force replaces it"
            )
        pem = _new_pem(algorithm, bits)
        _write_private(path, pem, replace=force)
        return _describe(normalize_domain(domain), path.stem, pem)

    def load(self, domain: str, selector: str | None = None) -> DkimKey:
        """The stored key of ``domain``; DkimKeyError when there is none or it cannot be read."""
        path = self.path(domain, selector)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise DkimKeyError(f"no DKIM key for {domain} with selector {path.stem} ({path})") from None
        except OSError as exc:
            raise DkimKeyError(f"cannot read the DKIM key {path}: {exc.strerror}") from None
        return _describe(normalize_domain(domain), path.stem, pem)

    def txt_record(self, domain: str, selector: str | None = None) -> tuple[str, str]:
        """(record name, record text) to publish for the stored key of ``domain``."""
        key = self.load(domain, selector)
        return key.record_name, key.record_value

    def expectation(self, domain: str) -> DkimExpectation | None:
        """What DNS should publish for our key of ``domain`` (for the deliverability checks), or None."""
        try:
            key = self.load(domain)
        except DkimKeyError:
            return None
        return DkimExpectation(key.record_name, key.record_value, key.public_key)


def _write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write a secret atomically: a 0600 temporary file in the same folder, fsync, then rename (or link,
    which refuses to overwrite a key made meanwhile), then fsync the folder."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise DkimKeyError(f"a DKIM key appeared at {path} meanwhile; --force replaces it") from None
            os.unlink(temporary)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
