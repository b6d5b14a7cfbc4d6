"""DKIM verification (RFC 6376) of every signature of one message, with dkimpy doing the cryptography.

The keys are fetched first, asynchronously, through postroom's Resolver; dkimpy then verifies in a worker
thread (hashing and RSA are CPU work) with a ``dnsfunc`` that only hands back what was fetched, so no
lookup ever leaves through a library's own resolver. Signing is not here (delivery signs outbound mail).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

import dkim
import dkim.util

from postroom.dns import DnsError, NoRecords, Resolver

__all__ = ["DkimResult", "DkimVerdict", "verify_signatures"]

DkimResult = Literal["pass", "fail", "neutral", "policy", "none", "temperror", "permerror"]

_KEY_PREFIX = 12  # RFC 6008: enough of b= to tell two signatures of one domain apart in the A-R header


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """One signature's result: its signing domain (d=), selector (s=), identity (i=), b= prefix, and why."""

    result: DkimResult
    domain: str = ""
    selector: str = ""
    identity: str = ""
    signature: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Signature:
    index: int
    tags: dict[bytes, bytes]
    problem: str = ""  # a malformed signature: permerror without a lookup


def _quiet_logger() -> logging.Logger:
    """dkimpy logs key and DNS problems itself; we report them in the verdict instead."""
    logger = logging.Logger("postroom.policy.dkim")  # noqa: LOG001 - private, never registered globally
    logger.disabled = True
    return logger


async def verify_signatures(
    message: bytes, *, resolver: Resolver, max_signatures: int = 10, min_key_bits: int = 1024
) -> tuple[DkimVerdict, ...]:
    """A verdict per DKIM-Signature (top first, at most ``max_signatures``); one "none" when unsigned."""
    try:
        signatures = _signatures(message)[:max_signatures]
    except dkim.DKIMException as exc:
        return (DkimVerdict("permerror", reason=f"message not parseable: {_text(str(exc))}"),)
    if not signatures:
        return (DkimVerdict("none", reason="message not signed"),)
    keys = await asyncio.gather(*(_fetch_key(resolver, signature) for signature in signatures))
    return await asyncio.to_thread(_verify_all, message, signatures, keys, min_key_bits)


def _signatures(message: bytes) -> list[_Signature]:
    header_end = message.find(b"\r\n\r\n")
    headers, _ = dkim.rfc822_parse(message if header_end < 0 else message[: header_end + 4])
    found = [value for name, value in headers if name.lower() == b"dkim-signature"]
    signatures = []
    for index, value in enumerate(found):
        try:
            tags = dkim.util.parse_tag_value(value)
            dkim.validate_signature_fields(tags)
        except dkim.DKIMException as exc:
            signatures.append(_Signature(index, {}, _text(str(exc))))
            continue
        except dkim.util.InvalidTagValueList as exc:
            signatures.append(_Signature(index, {}, f"bad tag list: {_text(str(exc))}"))
            continue
        signatures.append(_Signature(index, tags))
    return signatures


async def _fetch_key(resolver: Resolver, signature: _Signature) -> bytes | DkimVerdict:
    """The key record's text, or the verdict when there is none to be had."""
    if signature.problem:
        return _verdict(signature, "permerror", signature.problem)
    name = f"{_text(signature.tags[b's'])}._domainkey.{_text(signature.tags[b'd'])}"
    try:
        records = await resolver.txt(name)
    except NoRecords:
        return _verdict(signature, "permerror", f"no key at {name}")
    except DnsError as exc:
        return _verdict(signature, "temperror", f"key lookup {name}: {exc.reason}")
    for record in records:
        if "p=" in record:
            return record.encode()
    return _verdict(signature, "permerror", f"no key at {name}")


def _verify_all(
    message: bytes, signatures: list[_Signature], keys: list[bytes | DkimVerdict], min_key_bits: int
) -> tuple[DkimVerdict, ...]:
    """In a worker thread: the hashing and the RSA / Ed25519 checks."""
    verifier = dkim.DKIM(message, logger=_quiet_logger(), minkey=min_key_bits)
    return tuple(
        key if isinstance(key, DkimVerdict) else _verify_one(verifier, signature, key)
        for signature, key in zip(signatures, keys, strict=True)
    )


def _verify_one(verifier: dkim.DKIM, signature: _Signature, key: bytes) -> DkimVerdict:
    name = signature.tags[b"s"] + b"._domainkey." + signature.tags[b"d"] + b"."
    try:
        dkim.evaluate_pk(name, key)  # a bad or revoked key is permerror, not a failed signature
    except (dkim.DKIMException, ValueError) as exc:
        return _verdict(signature, "permerror", f"bad key: {_text(str(exc))}")
    try:
        valid = verifier.verify(idx=signature.index, dnsfunc=lambda _name, timeout=5: key)
    except dkim.ValidationError as exc:
        result: DkimResult = "fail" if "body hash mismatch" in str(exc) else "permerror"
        return _verdict(signature, result, _text(str(exc)))
    except dkim.DKIMException as exc:
        return _verdict(signature, "permerror", _text(str(exc)))
    if valid:
        return _verdict(signature, "pass", "good signature")
    return _verdict(signature, "fail", "signature did not verify")


def _verdict(signature: _Signature, result: DkimResult, reason: str) -> DkimVerdict:
    tags = signature.tags
    domain = _text(tags.get(b"d", b"")).lower()
    return DkimVerdict(
        result,
        domain=domain,
        selector=_text(tags.get(b"s", b"")),
        identity=_text(tags.get(b"i", b"@" + tags.get(b"d", b""))),
        signature=_text(b"".join(tags.get(b"b", b"").split()))[:_KEY_PREFIX],
        reason=reason[:200],
    )


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return "".join(char if char.isprintable() else "?" for char in value)
