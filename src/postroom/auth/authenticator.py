"""Checks SMTP AUTH credentials against the mailboxes' argon2id hashes, off the event loop.

It does not speak SASL (sasl.py); it answers "is this user who they say?", asking the throttle first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from postroom.auth.accounts import AccountError, Accounts, split_address
from postroom.auth.passwords import verify_password
from postroom.auth.sasl import Credentials
from postroom.auth.throttle import LoginThrottle

__all__ = ["Authenticator", "LoginThrottled"]

# A real hash to verify against when the user does not exist, so that a wrong user and a wrong password
# take the same time (no user enumeration by timing).
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$R5KfhiKo+4eG+/DGYDOYrw$c2ejsD47WEKl7pcVXKzlJVC0QNG4+6aM1XN3E7P9LzI"
)


class LoginThrottled(Exception):
    """Too many failed logins from this address or for this account: refuse until the window passes."""


class Authenticator:
    """``await authenticator.check(credentials, ip=...)`` -> the mailbox address, or None.

    Raises LoginThrottled during a cool-down; waits (progressively longer) before answering a client that
    keeps failing.
    """

    def __init__(
        self,
        *,
        accounts: Accounts,
        throttle: LoginThrottle,
        clock: Callable[[], float] = time.time,
        workers: int = 2,
    ) -> None:
        self._accounts = accounts
        self._throttle = throttle
        self._clock = clock
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="postroom-auth")

    async def check(self, credentials: Credentials, *, ip: str) -> str | None:
        try:
            address = "@".join(split_address(credentials.username))
        except AccountError:
            address = ""
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(
            self._pool, partial(self._throttle.verdict, ip=ip, user=address, now=self._clock())
        )
        if verdict.locked:
            raise LoginThrottled(f"too many failed logins from {ip} or for {address or 'that user'}")
        user = await self._verify(credentials, address)
        if user is None:
            await loop.run_in_executor(
                self._pool, partial(self._throttle.failed, ip=ip, user=address, now=self._clock())
            )
            await asyncio.sleep(verdict.delay)
        else:
            await loop.run_in_executor(self._pool, partial(self._throttle.succeeded, ip=ip, user=user))
        return user

    async def _verify(self, credentials: Credentials, address: str) -> str | None:
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
