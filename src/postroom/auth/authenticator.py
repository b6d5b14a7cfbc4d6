"""Checks SMTP AUTH logins: passwords against the mailboxes' argon2id hashes (off the event loop), SCRAM
proofs as scram.py found them; asks the throttle first and counts failures. Starts the SASL exchanges.

It does not speak SASL itself (sasl.py, scram.py); it answers "is this user who they say?".
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from postroom.auth.accounts import AccountError, Accounts, split_address
from postroom.auth.passwords import verify_password
from postroom.auth.sasl import Credentials, SaslExchange, ScramProof, Step, start_exchange
from postroom.auth.scram import MECHANISM as SCRAM
from postroom.auth.scram import ScramExchange, ScramSecrets
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
        scram_iterations: int = 600_000,  # [auth] scram_iterations: what a made-up salt for a stranger shows
    ) -> None:
        self._accounts = accounts
        self._throttle = throttle
        self._clock = clock
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="postroom-auth")
        self._scram_iterations = scram_iterations
        # Made-up SCRAM salts for unknown users are keyed by this (per process: a restart changes them).
        self._mock_key = secrets.token_bytes(32)

    def start_exchange(self, mechanism: str, initial_response: str | None) -> tuple[SaslExchange, Step]:
        """The SASL exchange for ``mechanism`` (one of sasl.MECHANISMS) and its first step."""
        if mechanism.upper() != SCRAM:
            return start_exchange(mechanism, initial_response)
        exchange = ScramExchange(
            lookup=self._scram_secrets, mock_key=self._mock_key, mock_iterations=self._scram_iterations
        )
        if initial_response is None:
            return exchange, exchange.first_challenge()
        return exchange, exchange.step(initial_response)

    def _scram_secrets(self, username: str) -> ScramSecrets | None:
        """The SCRAM user's stored secrets; None (the exchange makes some up) for a stranger, a mailbox
        without SCRAM secrets (older than them, or no password), or secrets that do not parse."""
        try:
            address = "@".join(split_address(username))
        except AccountError:
            return None
        stored = self._accounts.scram_secrets(address)
        if stored is None:
            return None
        try:
            return ScramSecrets.decode(stored)
        except ValueError:
            return None

    async def check(self, credentials: Credentials | ScramProof, *, ip: str) -> str | None:
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

    async def _verify(self, credentials: Credentials | ScramProof, address: str) -> str | None:
        if isinstance(credentials, ScramProof):  # checked by scram.py against this address's secrets
            return address if credentials.valid and address else None
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
