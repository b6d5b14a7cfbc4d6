"""AUTH steps without a socket: PLAIN and LOGIN through the real authenticator and its throttle; the user is
forgotten after STARTTLS (server/login.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator
from postroom.auth.passwords import hash_password
from postroom.auth.throttle import LoginThrottle, ThrottleSettings
from postroom.observe.log import Logger
from postroom.server.login import Login
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Reply
from postroom.store import open_database
from tests.helpers.fakes import Records


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def authenticator(tmp_path: Path) -> Iterator[Authenticator]:
    db = open_database(tmp_path / "postroom.db")
    accounts = Accounts(db=db, domains=["example.test"])
    accounts.add_mailbox("alice@example.test", password_hash=hash_password("correct horse"))
    throttle = LoginThrottle(
        db=db, settings=ThrottleSettings(free_failures=1, max_delay=0.0, lockout_failures=2, window=60.0)
    )
    authenticator = Authenticator(accounts=accounts, throttle=throttle, clock=lambda: 1000.0)
    yield authenticator
    authenticator.close()
    db.close()


def _login(authenticator: Authenticator | None, log: Logger) -> Login:
    return Login(authenticator=authenticator, log=log, session_id="s1", client_ip="192.0.2.1")


async def _outcome(answer: object) -> Reply:
    if isinstance(answer, Reply):
        return answer
    return await answer  # type: ignore[misc, no-any-return]


async def test_plain_login_sets_the_user_and_logs_no_password(
    authenticator: Authenticator, log: Logger, records: Records
) -> None:
    login = _login(authenticator, log)
    reply = await _outcome(login.start(events.Auth("PLAIN", _b64("\0alice@example.test\0correct horse"))))
    assert reply == replies.AUTH_OK
    assert login.user == "alice@example.test"
    assert [r["user"] for r in records.events("auth.ok")] == ["alice@example.test"]
    assert "correct horse" not in repr(list(records))
    login.forget()  # STARTTLS: start over
    assert login.user is None


async def test_login_mechanism_challenges_then_fails_a_wrong_password(
    authenticator: Authenticator, log: Logger, records: Records
) -> None:
    login = _login(authenticator, log)
    first = login.start(events.Auth("LOGIN"))
    assert isinstance(first, Reply)
    assert first.code == 334
    second = login.respond(events.AuthResponse(_b64("alice@example.test")))
    assert isinstance(second, Reply)
    assert second.code == 334
    reply = await _outcome(login.respond(events.AuthResponse(_b64("wrong"))))
    assert reply == replies.AUTH_FAILED
    assert login.user is None
    assert [r["username"] for r in records.events("auth.failed")] == ["alice@example.test"]


async def test_repeated_failures_are_throttled_with_454(authenticator: Authenticator, log: Logger) -> None:
    login = _login(authenticator, log)
    wrong = events.Auth("PLAIN", _b64("\0alice@example.test\0wrong"))
    outcomes = [await _outcome(login.start(wrong)) for _ in range(3)]
    assert outcomes[0] == replies.AUTH_FAILED
    assert outcomes[-1] == replies.AUTH_THROTTLED


def test_auth_without_an_authenticator_is_a_wiring_bug_answered_502(log: Logger) -> None:
    with pytest.raises(SmtpError) as caught:
        _login(None, log).start(events.Auth("PLAIN"))
    assert caught.value.reply == replies.NOT_IMPLEMENTED


def test_malformed_response_is_501(authenticator: Authenticator, log: Logger) -> None:
    with pytest.raises(SmtpError) as caught:
        _login(authenticator, log).start(events.Auth("PLAIN", _b64("no separators")))
    assert caught.value.reply == replies.AUTH_RESPONSE_SYNTAX
