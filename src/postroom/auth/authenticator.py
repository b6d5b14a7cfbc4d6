"""Checks SMTP AUTH credentials against the mailboxes' argon2id hashes, off the event loop.

It does not speak SASL (sasl.py) nor throttle (a later change); it answers: is this user who they say?
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from postroom.auth.accounts import AccountError, Accounts, split_address
from postroom.auth.passwords import verify_password
from postroom.auth.sasl import Credentials

__all__ = ["Authenticator"]

# A real hash to verify against when the user does not exist, so that a wrong user and a wrong password
# take the same time (no user enumeration by timing).
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$R5KfhiKo+4eG+/DGYDOYrw$c2ejsD47WEKl7pcVXKzlJVC0QNG4+6aM1XN3E7P9LzI"
)


class Authenticator:
    """``await authenticator.check(credentials)`` -> the mailbox address, or None."""

    def __init__(self, *, accounts: Accounts, workers: int = 2) -> None:
        self._accounts = accounts
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="postroom-auth")

    async def check(self, credentials: Credentials) -> str | None:
        try:
            address = "@".join(split_address(credentials.username))
        except AccountError:
            address = ""
        if credentials.authzid and credentials.authzid.lower() != address:
            return None  # acting for someone else (RFC 4616 authzid) is not allowed
        stored = self._accounts.password_hash(address) if address else None
        loop = asyncio.get_running_loop()
        valid = await loop.run_in_executor(
            self._pool, verify_password, stored or _DUMMY_HASH, credentials.password
        )
        return address if valid and stored is not None else None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
