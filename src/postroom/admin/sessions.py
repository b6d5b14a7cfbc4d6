"""Dashboard logins: random session tokens with a CSRF token each, an expiry, and a per-IP limit on failed
password attempts. In memory (a restart logs everyone out); time comes from the clock passed in."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginSession", "LoginSessions", "LoginThrottle"]

_MAX_SESSIONS = 1000  # more live logins than any operator team needs: the oldest goes first


@dataclass(frozen=True, slots=True)
class LoginSession:
    """One login: the cookie's token, the token POSTs must echo in X-CSRF-Token, and when it ends."""

    token: str
    csrf: str
    expires_at: float

    def csrf_matches(self, presented: str) -> bool:
        return hmac.compare_digest(self.csrf.encode(), presented.encode())


class LoginSessions:
    """Live logins by token."""

    def __init__(self, *, lifetime: float, clock: Callable[[], float]) -> None:
        self._lifetime = lifetime
        self._clock = clock
        self._sessions: dict[str, LoginSession] = {}

    def create(self) -> LoginSession:
        now = self._clock()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = LoginSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self._lifetime)
        self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> LoginSession | None:
        """The live session for a cookie's token; None when unknown or expired."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[token]
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)


class LoginThrottle:
    """At most ``max_failures`` wrong passwords per client IP in ``window`` seconds; then 429 till it ends."""

    def __init__(self, *, clock: Callable[[], float], max_failures: int = 10, window: float = 300.0) -> None:
        self._clock = clock
        self._max = max_failures
        self._window = window
        self._failures: dict[str, list[float]] = {}

    def allowed(self, client: str) -> bool:
        return len(self._recent(client)) < self._max

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        self._failures[client] = [*self._recent(client), self._clock()]

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> list[float]:
        since = self._clock() - self._window
        return [moment for moment in self._failures.get(client, ()) if moment > since]
