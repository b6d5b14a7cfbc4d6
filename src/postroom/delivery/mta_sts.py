"""MTA-STS (RFC 8461): a domain's published promise that its MX hosts take verified TLS; found and cached.

``MtaSts.policy(domain)`` answers which policy (if any) applies to delivery to a domain now: it reads the
``_mta-sts.<domain>`` TXT record, fetches ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` when the
record's id is new or the cached policy expired, and keeps policies (in memory and in a JSON file in the data
folder, so a restart keeps them: an attacker who can block the fetch must not erase a policy by waiting for a
restart). All DNS goes through postroom's resolver. It decides nothing about a delivery itself: the courier
asks ``Policy.allows(mx)`` and requires a verified certificate when the mode is enforce.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from postroom.dns.resolver import DnsError, Resolver
from postroom.observe.log import Logger, sanitize

__all__ = ["MtaSts", "Policy", "PolicyError", "parse_policy", "parse_sts_record"]

_MAX_POLICY = 64 * 1024  # RFC 8461 3.3: a policy larger than this may be refused
_MAX_AGE = 31_557_600  # RFC 8461 3.2: a year at most
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_MODES = ("enforce", "testing", "none")

Mode = Literal["enforce", "testing", "none"]


class PolicyError(Exception):
    """A record or a policy that does not follow RFC 8461, or a fetch that failed; worded for the log."""


@dataclass(frozen=True, slots=True)
class Policy:
    """One domain's policy, with the record id it came with and when it stops counting (epoch seconds)."""

    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    policy_id: str = ""
    expires: float = 0.0

    def allows(self, host: str) -> bool:
        """RFC 8461 4.1: the MX host's name matches an ``mx`` pattern ("*." covers exactly one label)."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                first, dot, rest = host.partition(".")
                if dot and first and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_sts_record(records: list[str]) -> str | None:
    """The id of the one ``v=STSv1`` TXT record, or None when there is none or more than one (3.1)."""
    found = [text for text in records if re.match(r"v=STSv1\s*(;|$)", text)]
    if len(found) != 1:
        return None
    fields = dict(
        (key.strip(), value.strip())
        for key, sep, value in (part.partition("=") for part in found[0].split(";"))
        if sep
    )
    policy_id = fields.get("id", "")
    return policy_id if _ID.fullmatch(policy_id) else None


def parse_policy(text: str, *, policy_id: str = "", now: float = 0.0) -> Policy:
    """A policy file (3.2): ``key: value`` lines; version, mode and max_age required, mx unless mode none."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values.setdefault(key.strip(), []).append(value.strip())
    if values.get("version") != ["STSv1"]:
        raise PolicyError("the policy's version is not STSv1")
    mode = (values.get("mode") or [""])[0]
    if mode not in _MODES:
        raise PolicyError(f"the policy's mode {sanitize(mode)!r} is not enforce, testing or none")
    age_text = (values.get("max_age") or [""])[0]
    if not age_text.isdigit() or len(age_text) > 10:
        raise PolicyError("the policy's max_age is not a number of seconds")
    max_age = min(int(age_text), _MAX_AGE)
    mx = tuple(pattern.lower().rstrip(".") for pattern in values.get("mx", []))
    if not mx and mode != "none":
        raise PolicyError("the policy names no mx")
    return Policy(mode, mx, max_age, policy_id, now + max_age)  # type: ignore[arg-type]


class MtaSts:
    """Policies for destination domains: looked up, fetched over HTTPS, cached until they expire."""

    def __init__(
        self,
        *,
        resolver: Resolver,
        cache_file: Path,
        clock: Callable[[], float],
        log: Logger,
        port: int = 443,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._resolver = resolver
        self._cache_file = cache_file
        self._clock = clock
        self._log = log
        self._port = port
        self._timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._policies: dict[str, Policy] = self._load()
        self._locks: dict[str, asyncio.Lock] = {}

    async def policy(self, domain: str) -> Policy | None:
        """The policy that applies to ``domain`` now, or None (no policy, or mode none)."""
        domain = domain.lower()
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one lookup and fetch per domain at a time; the others wait and share it
            found = await self._current(domain)
        return found if found is not None and found.mode != "none" else None

    async def _current(self, domain: str) -> Policy | None:
        now = self._clock()
        cached = self._policies.get(domain)
        if cached is not None and cached.expires <= now:
            cached = None
        try:
            policy_id = parse_sts_record(await self._resolver.txt(f"_mta-sts.{domain}"))
        except DnsError as exc:
            # 5.1: without a record (or when DNS fails) a cached, unexpired policy still applies.
            if exc.temporary:
                self._log.info("mta_sts.record_unavailable", domain=domain, error=sanitize(str(exc)))
            return cached
        if policy_id is None:
            return cached
        if cached is not None and cached.policy_id == policy_id:
            return cached
        try:
            text = await asyncio.wait_for(self._fetch(domain), self._timeout)
            policy = parse_policy(text, policy_id=policy_id, now=now)
        except (PolicyError, OSError, TimeoutError, DnsError, UnicodeDecodeError) as exc:
            self._log.warning("mta_sts.fetch_failed", domain=domain, error=sanitize(str(exc) or repr(exc)))
            return cached
        self._policies[domain] = policy
        self._log.info(
            "mta_sts.policy", domain=domain, mode=policy.mode, id=policy_id, max_age=policy.max_age
        )
        await asyncio.to_thread(self._save)
        return policy

    async def _fetch(self, domain: str) -> str:
        """GET the policy over HTTPS with a certificate valid for mta-sts.<domain>; no redirects (3.3)."""
        host = f"mta-sts.{domain}"
        addresses = await self._resolver.addresses(host)
        last: OSError = OSError(f"{host} has no address")
        for address in addresses:
            try:
                reader, writer = await asyncio.open_connection(
                    address, self._port, ssl=self._context, server_hostname=host
                )
            except OSError as exc:
                last = exc
                continue
            try:
                request = (
                    f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                    "User-Agent: postroom\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
                )
                writer.write(request.encode("ascii"))
                await writer.drain()
                response = await reader.read(_MAX_POLICY + 16 * 1024)
                return _policy_text(response)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
        raise last

    def _load(self) -> dict[str, Policy]:
        try:
            data = json.loads(self._cache_file.read_text(encoding="utf-8"))
            return {
                domain: Policy(
                    item["mode"], tuple(item["mx"]), int(item["max_age"]), item["policy_id"], item["expires"]
                )
                for domain, item in data.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._log.warning(
                "mta_sts.cache_unreadable", file=str(self._cache_file), error=sanitize(str(exc))
            )
            return {}

    def _save(self) -> None:
        """Write the cache atomically (temporary file, fsync, rename)."""
        data = {domain: asdict(policy) for domain, policy in self._policies.items()}
        self._cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self._cache_file.parent, prefix=".mta-sts.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(data, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(name, self._cache_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise


def _policy_text(response: bytes) -> str:
    """The body of a 200 text/plain response; anything else (a redirect too) is a PolicyError."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        raise PolicyError("the policy host sent no complete HTTP response")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
        raise PolicyError(f"the policy host answered {sanitize(status_line)!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not headers.get("content-type", "").lower().startswith("text/plain"):
        raise PolicyError("the policy is not served as text/plain")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers and headers["content-length"].isdigit():
        body = body[: int(headers["content-length"])]
    if len(body) > _MAX_POLICY:
        raise PolicyError("the policy is larger than 64 KiB")
    return body.decode("utf-8")


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        size_text = size_line.split(b";")[0].strip()
        if not sep or not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise PolicyError("the policy's chunked encoding is malformed")
        size = int(size_text, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
