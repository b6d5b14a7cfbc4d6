"""Local mailboxes and aliases: who exists, and where mail for an address ends up. No protocol, no I/O
beyond the database connection it is given."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["AccountError", "Accounts", "Alias", "Mailbox", "split_address"]

_MAX_ALIAS_DEPTH = 8
_CACHE_SECONDS = 1.0  # a change by `postroom user|alias` reaches a running server within this time
_CACHE_ENTRIES = 10_000  # bounded: a client guessing addresses cannot grow it without limit


class AccountError(Exception):
    """A refused account change, worded for the operator."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    address: str
    has_password: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Alias:
    address: str
    target: str


def split_address(address: str) -> tuple[str, str]:
    """'User@Example.TEST' -> ('user', 'example.test'); raises AccountError when it is not local@domain."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep or not local or not domain or any(char.isspace() for char in address.strip()):
        raise AccountError(f"{address!r} is not an address of the form local-part@domain")
    return local.lower(), domain.lower().rstrip(".")


class Accounts:
    """Mailboxes and aliases of the local domains, kept in the database."""

    def __init__(
        self,
        *,
        db: sqlite3.Connection,
        domains: Iterable[str],
        plus_separator: str = "+",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._domains = tuple(domain.lower().rstrip(".") for domain in domains)
        self._plus = plus_separator
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, list[str] | None]] = {}

    @property
    def domains(self) -> tuple[str, ...]:
        return self._domains

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self._domains

    # --- lookups (hot path: one RCPT each) -------------------------------------------------------

    def resolve(self, local_part: str, domain: str) -> list[str] | None:
        """The mailboxes mail for local_part@domain is delivered to, or None when nobody is there.

        ``domain`` "" is the bare <Postmaster> of RFC 5321 4.1.1.3 (the first local domain's).
        postmaster@ each local domain always exists (RFC 5321 4.5.1); user+tag@ falls back to user@.
        Answers are cached for a second: one RCPT costs no database query under load.
        """
        domain = (domain or self._domains[0]).lower().rstrip(".")
        if domain not in self._domains:
            return None
        local = local_part.lower()
        now = self._clock()
        cached = self._cache.get((local, domain))
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self._lookup(local, domain)
        if len(self._cache) >= _CACHE_ENTRIES:
            self._cache.clear()
        self._cache[(local, domain)] = (now + _CACHE_SECONDS, found)
        return found

    def _lookup(self, local: str, domain: str) -> list[str] | None:
        found = self._expand(f"{local}@{domain}", 0)
        if found is None and self._plus and self._plus in local:
            found = self._expand(f"{local.split(self._plus, 1)[0]}@{domain}", 0)
        if found is None and local == "postmaster":
            found = [f"postmaster@{domain}"]
        return found

    def _expand(self, address: str, depth: int) -> list[str] | None:
        row = self._db.execute("SELECT 1 FROM mailboxes WHERE address = ?", (address,)).fetchone()
        if row is not None:
            return [address]
        targets = [r[0] for r in self._db.execute("SELECT target FROM aliases WHERE address = ?", (address,))]
        if not targets or depth >= _MAX_ALIAS_DEPTH:
            return None
        mailboxes: list[str] = []
        for target in targets:
            for mailbox in self._expand(target, depth + 1) or [target]:
                if mailbox not in mailboxes:
                    mailboxes.append(mailbox)
        return mailboxes

    def password_hash(self, address: str) -> str | None:
        row = self._db.execute("SELECT password_hash FROM mailboxes WHERE address = ?", (address,)).fetchone()
        return None if row is None else row[0]

    def scram_secrets(self, address: str) -> str | None:
        """The SCRAM-SHA-256 secrets kept for the mailbox's password (scram.py's encoded form), or None."""
        row = self._db.execute("SELECT scram_sha256 FROM mailboxes WHERE address = ?", (address,)).fetchone()
        return None if row is None else row[0]

    # --- changes (the CLI) ------------------------------------------------------------------------

    def add_mailbox(self, address: str, *, password_hash: str | None = None, scram: str | None = None) -> str:
        """``scram``: SCRAM-SHA-256 secrets for the same password (scram.py), or None (no SCRAM login)."""
        local, domain = split_address(address)
        self._require_local(domain)
        normalized = f"{local}@{domain}"
        with self._db:
            if self._exists(normalized):
                raise AccountError(f"{normalized} already exists")
            self._db.execute(
                "INSERT INTO mailboxes (address, password_hash, scram_sha256, created_at)"
                " VALUES (?, ?, ?, ?)",
                (normalized, password_hash, scram, time.time()),
            )
        return normalized

    def set_password(self, address: str, password_hash: str, *, scram: str | None = None) -> None:
        """Replaces both forms: old SCRAM secrets never outlive the password they were made from."""
        normalized = "@".join(split_address(address))
        with self._db:
            cursor = self._db.execute(
                "UPDATE mailboxes SET password_hash = ?, scram_sha256 = ? WHERE address = ?",
                (password_hash, scram, normalized),
            )
        if cursor.rowcount == 0:
            raise AccountError(f"no mailbox {normalized}")

    def remove_mailbox(self, address: str) -> None:
        normalized = "@".join(split_address(address))
        with self._db:
            cursor = self._db.execute("DELETE FROM mailboxes WHERE address = ?", (normalized,))
        if cursor.rowcount == 0:
            raise AccountError(f"no mailbox {normalized}")

    def mailboxes(self) -> list[Mailbox]:
        rows = self._db.execute(
            "SELECT address, password_hash IS NOT NULL, created_at FROM mailboxes ORDER BY address"
        )
        return [Mailbox(address, bool(has), created) for address, has, created in rows]

    def add_alias(self, address: str, target: str) -> Alias:
        local, domain = split_address(address)
        self._require_local(domain)
        target_local, target_domain = split_address(target)
        # Remote targets need relaying (a later issue); until then an alias must end in a local mailbox.
        self._require_local(target_domain)
        alias = Alias(f"{local}@{domain}", f"{target_local}@{target_domain}")
        if alias.address == alias.target:
            raise AccountError(f"{alias.address} cannot be an alias of itself")
        with self._db:
            if self._db.execute("SELECT 1 FROM mailboxes WHERE address = ?", (alias.address,)).fetchone():
                raise AccountError(f"{alias.address} is a mailbox; remove it first to make it an alias")
            if self._db.execute(
                "SELECT 1 FROM aliases WHERE address = ? AND target = ?", (alias.address, alias.target)
            ).fetchone():
                raise AccountError(f"{alias.address} -> {alias.target} already exists")
            self._db.execute(
                "INSERT INTO aliases (address, target) VALUES (?, ?)", (alias.address, alias.target)
            )
        return alias

    def remove_alias(self, address: str, target: str | None = None) -> int:
        normalized = "@".join(split_address(address))
        with self._db:
            if target is None:
                cursor = self._db.execute("DELETE FROM aliases WHERE address = ?", (normalized,))
            else:
                cursor = self._db.execute(
                    "DELETE FROM aliases WHERE address = ? AND target = ?",
                    (normalized, "@".join(split_address(target))),
                )
        if cursor.rowcount == 0:
            raise AccountError(f"no alias {normalized}" + (f" -> {target}" if target else ""))
        return cursor.rowcount

    def aliases(self) -> list[Alias]:
        rows = self._db.execute("SELECT address, target FROM aliases ORDER BY address, target")
        return [Alias(address, target) for address, target in rows]

    def _exists(self, address: str) -> bool:
        return bool(
            self._db.execute("SELECT 1 FROM mailboxes WHERE address = ?", (address,)).fetchone()
            or self._db.execute("SELECT 1 FROM aliases WHERE address = ?", (address,)).fetchone()
        )

    def _require_local(self, domain: str) -> None:
        if domain not in self._domains:
            local = ", ".join(self._domains)
            raise AccountError(f"{domain} is not a local domain (local domains: {local})")
