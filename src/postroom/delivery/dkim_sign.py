"""DKIM-Signature header fields for outbound messages (RFC 6376, ed25519 per RFC 8463).

Theory of operation: ``DkimSigner.signature`` reads one message (bytes or a spool file), picks the signing
domain (the From: domain, else the envelope sender's) among the domains that have a key in ``DkimKeys``,
hashes the body as a stream (``BodyHash``, so a message of any size is signed holding only its header
section and one chunk in memory), then canonicalizes the signed header fields (RFC 6376 3.4.1, 3.4.2;
chosen bottom-up, 5.4.2), folds the DKIM-Signature field and signs with ``cryptography`` (OpenSSL: RSA
PKCS#1 v1.5 over SHA-256, or Ed25519 over the SHA-256 hash, RFC 8463 3). It returns the header field to
send in front of the message, or b"" to send it unsigned (no key, signing off, a header section over
256 KiB or not parseable, a broken key: each logged). It is blocking: callers run it in a worker thread.
Keys are loaded once and again when their file changes (or after ``reload``, on SIGHUP). It sends and
queues nothing.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from postroom.config.schema import DkimSettings
from postroom.delivery.dkim_keys import DkimKey, DkimKeyError, DkimKeys, normalize_domain
from postroom.observe.log import Logger, sanitize

__all__ = ["BodyHash", "DkimSigner"]

_HEADERS_MAX = 256 * 1024  # the header section must end within this many octets to be signed
_CHUNK = 64 * 1024
_TRAILING_SPACE = re.compile(rb"[\t ]+\r\n")
_SPACE_RUN = re.compile(rb"[\t ]+")
_LINE_END = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+):")  # RFC 5322 2.2: printable ASCII but ":"
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters without the CRLF
_FIELD = b"DKIM-Signature"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class BodyHash:
    """The sha256 of a body under "simple" (RFC 6376 3.4.3) or "relaxed" (3.4.4) canonicalization, fed in
    chunks of any size. Empty lines at the end are held back until a non-empty line shows they are not."""

    def __init__(self, algorithm: Literal["simple", "relaxed"]) -> None:
        self._relaxed = algorithm == "relaxed"
        self._hash = hashlib.sha256()
        self._partial = b""  # the last, unfinished line
        self._empty_lines = 0  # empty lines held back
        self._hashed = False

    def update(self, chunk: bytes) -> None:
        data = self._partial + chunk
        cut = data.rfind(b"\r\n") + 2
        if cut < 2:
            self._partial = data
            return
        self._partial = data[cut:]
        self._lines(data[:cut])

    def _lines(self, block: bytes) -> None:
        """Whole lines, each ending in CRLF."""
        if self._relaxed:  # trailing WSP of each line goes, other WSP runs become one SP
            block = _SPACE_RUN.sub(b" ", _TRAILING_SPACE.sub(b"\r\n", block))
        end = len(block)
        while end >= 2 and block[end - 2 : end] == b"\r\n":
            end -= 2
        trailing = (len(block) - end) // 2
        if end == 0:  # nothing but empty lines
            self._empty_lines += trailing
            return
        self._emit(b"\r\n" * self._empty_lines + block[: end + 2])
        self._empty_lines = trailing - 1

    def _emit(self, data: bytes) -> None:
        self._hash.update(data)
        self._hashed = True

    def digest(self) -> bytes:
        """The hash of the whole body; a last line without CRLF gets one (3.4.3, 3.4.4)."""
        if self._partial:
            tail = _SPACE_RUN.sub(b" ", self._partial) if self._relaxed else self._partial
            self._emit(b"\r\n" * self._empty_lines + tail + b"\r\n")
            self._partial, self._empty_lines = b"", 0
        if not self._hashed and not self._relaxed:
            self._emit(b"\r\n")  # 3.4.3: an empty body is one CRLF under "simple"
        return self._hash.digest()


def _header_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """The header section as (name, value) pairs, each value with its folding and a final CRLF (lines may
    end in LF; they are joined with CRLF, as they are sent). An mbox "From " line is skipped; any other
    line that is neither a field nor a continuation is a ValueError."""
    fields: list[tuple[bytes, bytes]] = []
    for line in _LINE_END.split(block):
        if not line:
            break
        if line[0] in b" \t":
            if not fields:
                raise ValueError("the header section begins with a continuation line")
            name, value = fields[-1]
            fields[-1] = (name, value + line + b"\r\n")
        elif found := _FIELD_NAME.match(line):
            fields.append((found[1], line[found.end() :] + b"\r\n"))
        elif not line.startswith(b"From "):
            raise ValueError("a header line is not a header field")
    return fields


def _canonical_header(name: bytes, value: bytes, *, relaxed: bool) -> bytes:
    """One header field under "simple" (RFC 6376 3.4.1: as is) or "relaxed" (3.4.2: name in lower case,
    value unfolded, WSP runs made one SP, WSP at its ends removed) canonicalization, ending in CRLF."""
    if not relaxed:
        return name + b":" + value
    unfolded = _SPACE_RUN.sub(b" ", _LINE_END.sub(b"", value)).strip(b" ")
    return name.lower().rstrip(b" \t") + b":" + unfolded + b"\r\n"


def _signed_fields(
    fields: Sequence[tuple[bytes, bytes]], names: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    """The fields that ``names`` (the h= list) sign, in its order: each name takes the last of its fields
    not yet taken; a name without one takes nothing (RFC 6376 5.4.2, so an added field breaks the
    signature)."""
    unused: dict[bytes, list[int]] = {}
    for index, (name, _) in enumerate(fields):
        unused.setdefault(name.lower(), []).append(index)
    return [fields[unused[name].pop()] for name in names if unused.get(name)]


def _fold(atoms: Sequence[bytes], *, column: int) -> bytes:
    """Atoms in one line while it fits in 78 characters, else on a new line after FWS (CRLF SP). Atoms
    ending in ";" are tags, followed by a space on the same line; others (the parts of an h= list) are
    followed directly by the next atom."""
    out: list[bytes] = []
    glue = b""
    for atom in atoms:
        if out and column + len(glue) + len(atom) > _FOLD_AT:
            out.append(b"\r\n ")
            column = 1
        else:
            out.append(glue)
            column += len(glue)
        out.append(atom)
        column += len(atom)
        glue = b" " if atom.endswith(b";") else b""
    return b"".join(out)


def _raw_signature(private: PrivateKey, data: bytes) -> bytes:
    """RSA PKCS#1 v1.5 over SHA-256 (RFC 6376 3.3.1), or Ed25519 over the SHA-256 hash (RFC 8463 3)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(hashlib.sha256(data).digest())
    return private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _from_domains(headers: Sequence[Sequence[bytes]]) -> set[str]:
    values = [value.decode("utf-8", "replace") for name, value in headers if name.lower() == b"from"]
    addresses = email.utils.getaddresses(values)
    return {address.rpartition("@")[2].lower() for _, address in addresses if "@" in address}


class DkimSigner:
    """Signs messages with the keys of a ``DkimKeys`` store; safe to call from several threads."""

    def __init__(
        self, *, keys: DkimKeys, settings: DkimSettings, log: Logger, clock: Callable[[], float]
    ) -> None:
        self._keys = keys
        self._settings = settings
        self._log = log
        self._clock = clock
        header_canon, _, body_canon = settings.canonicalization.partition("/")
        self._relaxed_headers = header_canon == "relaxed"
        self._body_canon: Literal["simple", "relaxed"] = "relaxed" if body_canon == "relaxed" else "simple"
        self._wanted = {name.lower().encode() for name in settings.headers}
        self._oversign = [name.lower().encode() for name in settings.oversign]
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int, int], DkimKey, PrivateKey]] = {}

    def reload(self) -> None:
        """Forget the loaded keys: each is read again from its file when next needed (SIGHUP)."""
        with self._lock:
            self._cache.clear()

    def signature(self, message: bytes | Path, *, sender: str, queue_id: str) -> bytes:
        """The DKIM-Signature header field (CRLF-terminated) to put in front of ``message``, or b""."""
        if not self._settings.sign:
            return b""
        try:
            with _open(message) as stream:
                return self._sign(stream, sender, queue_id)
        except (DkimKeyError, ValueError) as exc:
            self._log.warning("delivery.dkim_failed", queue_id=queue_id, error=sanitize(str(exc)))
            return b""

    def _sign(self, stream: BinaryIO, sender: str, queue_id: str) -> bytes:
        head = stream.read(_HEADERS_MAX)
        end = head.find(b"\r\n\r\n")
        if end < 0 and len(head) == _HEADERS_MAX:
            self._log.warning("delivery.dkim_unsigned", queue_id=queue_id, reason="headers over 256 KiB")
            return b""
        header_block, body_start = (head, b"") if end < 0 else (head[: end + 2], head[end + 4 :])
        headers = _header_fields(header_block)
        from_domains = _from_domains(headers)
        if not from_domains:
            self._log.info("delivery.dkim_unsigned", queue_id=queue_id, reason="no From: address")
            return b""
        found = self._key_for(from_domains, sender)
        if found is None:
            return b""
        body = BodyHash(self._body_canon)
        body.update(body_start)
        while chunk := stream.read(_CHUNK):
            body.update(chunk)
        field = self._field(found, headers, body.digest())
        key = found[0]
        self._log.info("delivery.dkim_signed", queue_id=queue_id, domain=key.domain, selector=key.selector)
        return field

    def _key_for(self, from_domains: set[str], sender: str) -> tuple[DkimKey, PrivateKey] | None:
        """The key of the From: domain (when From: names one domain), else of the envelope sender's."""
        candidates = [*from_domains][:1] if len(from_domains) == 1 else []
        if "@" in sender:
            candidates.append(sender.rpartition("@")[2])
        for candidate in candidates:
            try:
                domain = normalize_domain(candidate)
            except DkimKeyError:
                continue
            found = self._cached(domain)
            if found is not None:
                return found
        return None

    def _cached(self, domain: str) -> tuple[DkimKey, PrivateKey] | None:
        """The key of ``domain``, loaded again when its file changed; None when it has none."""
        path = self._keys.path(domain)
        try:
            status = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (status.st_mtime_ns, status.st_ino, status.st_size)
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        key = self._keys.load(domain)
        # load() has just read and checked these very bytes: skip the RSA check (~20 ms) the second time
        private = serialization.load_pem_private_key(
            key.private_pem, password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(private, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):  # load() checked it
            raise DkimKeyError(f"the DKIM key of {domain} is neither RSA nor ed25519")
        with self._lock:
            self._cache[domain] = (stamp, key, private)
        self._log.info("dkim.key_loaded", domain=domain, selector=key.selector, algorithm=key.algorithm)
        return key, private

    def _field(
        self, found: tuple[DkimKey, PrivateKey], headers: Sequence[tuple[bytes, bytes]], body_hash: bytes
    ) -> bytes:
        """The folded DKIM-Signature field (RFC 6376 3.5) with b= over the signed header fields and then
        the field itself with an empty b= and no CRLF after it (3.7); b= starts a line of its own."""
        key, private = found
        algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
        names = [name.lower() for name, _ in headers if name.lower() in self._wanted] + self._oversign
        listed = [part + b":" for part in (b"h=" + b":".join(names) + b";").split(b":")]
        listed[-1] = listed[-1][:-1]
        atoms = [
            b"v=1;",
            b"a=" + algorithm + b";",
            b"c=" + self._settings.canonicalization.encode() + b";",
            b"d=" + key.domain.encode() + b";",
            b"s=" + key.selector.encode() + b";",
            b"t=%d;" % int(self._clock()),
            *listed,
            b"bh=" + base64.b64encode(body_hash) + b";",
        ]
        unsigned = b" " + _fold(atoms, column=len(_FIELD) + 2) + b"\r\n b="
        relaxed = self._relaxed_headers
        data = [
            _canonical_header(name, value, relaxed=relaxed) for name, value in _signed_fields(headers, names)
        ]
        data.append(_canonical_header(_FIELD, unsigned + b"\r\n", relaxed=relaxed)[:-2])
        signature = base64.b64encode(_raw_signature(private, b"".join(data)))
        first = _FOLD_AT - len(b" b=")
        lines = [
            signature[:first],
            *(signature[at : at + _FOLD_AT - 1] for at in range(first, len(signature), _FOLD_AT - 1)),
        ]
        return _FIELD + b":" + unsigned + b"\r\n ".join(lines) + b"\r\n"


def _open(message: bytes | Path) -> BinaryIO:
    if isinstance(message, bytes):
        return io.BytesIO(message)
    return open(message, "rb")
