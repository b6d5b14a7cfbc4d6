"""Brute-force protection for AUTH: failed logins per client IP and per account, kept in the database so a
restart does not forgive them. Progressive delay after a few failures, then a cool-down refusal.

Pure bookkeeping over a database connection; time is passed in (``now``). The caller sleeps and replies.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

from postroom.config.schema import AuthSettings

__all__ = ["LoginThrottle", "ThrottleSettings", "Verdict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleSettings:
    free_failures: int = 3  # failures answered at once
    max_delay: float = 8.0  # seconds; the delay doubles per failure beyond the free ones
    lockout_failures: int = 10  # from here on: refused (454 4.7.0) until the window passes
    window: float = 900.0  # seconds after the last failure when the count starts over

    @classmethod
    def from_config(cls, auth: AuthSettings) -> ThrottleSettings:
        """The [auth] section's throttle_* keys."""
        return cls(
            free_failures=auth.throttle_free_failures,
            max_delay=auth.throttle_max_delay,
            lockout_failures=auth.throttle_lockout_failures,
            window=auth.throttle_window,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Before a login: refuse it outright (``locked``), else wait ``delay`` seconds before answering it."""

    locked: bool
    delay: float


class LoginThrottle:
    """Counts failures under two keys, ``ip:<address>`` and ``user:<mailbox>``; the worse one decides."""

    def __init__(self, *, db: sqlite3.Connection, settings: ThrottleSettings | None = None) -> None:
        self._db = db
        self._settings = settings or ThrottleSettings()
        self._lock = threading.Lock()  # the connection is used from the authenticator's worker threads

    def verdict(self, *, ip: str, user: str, now: float) -> Verdict:
        failures = max(self._failures(f"ip:{ip}", now), self._failures(f"user:{user}", now) if user else 0)
        settings = self._settings
        if failures >= settings.lockout_failures:
            return Verdict(locked=True, delay=0.0)
        extra = failures - settings.free_failures
        delay = 0.0 if extra < 0 else min(settings.max_delay, 2.0**extra)
        return Verdict(locked=False, delay=delay)

    def failed(self, *, ip: str, user: str, now: float) -> None:
        keys = [f"ip:{ip}"] + ([f"user:{user}"] if user else [])
        with self._lock, self._db:
            for key in keys:
                count = self._failures(key, now) + 1
                self._db.execute(
                    "INSERT INTO auth_failures (key, failures, last_failure) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,"
                    " last_failure = excluded.last_failure",
                    (key, count, now),
                )

    def succeeded(self, *, ip: str, user: str) -> None:
        """A good login forgives its account; the address keeps its count (it may be guessing others)."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM auth_failures WHERE key = ?", (f"user:{user}",))

    def _failures(self, key: str, now: float) -> int:
        row = self._db.execute(
            "SELECT failures, last_failure FROM auth_failures WHERE key = ?", (key,)
        ).fetchone()
        if row is None or now - float(row[1]) > self._settings.window:
            return 0
        return int(row[0])
