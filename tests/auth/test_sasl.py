"""SASL PLAIN and LOGIN as pure exchanges."""

from __future__ import annotations

import base64

import pytest

from postroom.auth.sasl import Challenge, Credentials, Malformed, start_exchange


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_plain_with_initial_response() -> None:
    _, step = start_exchange("PLAIN", b64("\0alice@example.test\0s3cret"))
    assert step == Credentials(username="alice@example.test", password="s3cret")
    assert "s3cret" not in repr(step)


def test_plain_without_initial_response_asks_with_an_empty_challenge() -> None:
    exchange, step = start_exchange("plain", None)
    assert step == Challenge("")
    assert exchange.step(b64("admin\0alice\0pw")) == Credentials("alice", "pw", authzid="admin")


def test_login_asks_username_then_password() -> None:
    exchange, step = start_exchange("LOGIN", None)
    assert step == Challenge(b64("Username:"))
    assert exchange.step(b64("alice")) == Challenge(b64("Password:"))
    assert exchange.step(b64("pw")) == Credentials("alice", "pw")


def test_login_with_initial_username() -> None:
    exchange, step = start_exchange("LOGIN", b64("alice"))
    assert step == Challenge(b64("Password:"))
    assert exchange.step(b64("pw")) == Credentials("alice", "pw")


@pytest.mark.parametrize(
    ("mechanism", "response"),
    [("PLAIN", "not base64!"), ("PLAIN", b64("only-one-part")), ("PLAIN", b64("\0alice\0")), ("PLAIN", "=")],
)
def test_malformed_responses(mechanism: str, response: str) -> None:
    _, step = start_exchange(mechanism, response)
    assert isinstance(step, Malformed)
