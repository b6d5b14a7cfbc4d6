"""Mailboxes and aliases: who exists and where mail for an address goes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.auth.accounts import AccountError, Accounts
from postroom.auth.passwords import hash_password, verify_password
from postroom.store import open_database


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(tmp_path: Path, clock: Clock) -> Iterator[Accounts]:
    db = open_database(tmp_path / "postroom.db")
    accounts = Accounts(db=db, domains=["Example.TEST", "other.test"], clock=clock)
    accounts.add_mailbox("alice@example.test")
    accounts.add_mailbox("bob@example.test")
    yield accounts
    db.close()


def test_mailbox_alias_plus_and_postmaster_resolution(accounts: Accounts) -> None:
    accounts.add_alias("team@example.test", "alice@example.test")
    accounts.add_alias("team@example.test", "bob@example.test")
    accounts.add_alias("info@example.test", "team@example.test")
    assert accounts.resolve("Alice", "EXAMPLE.test") == ["alice@example.test"]
    assert accounts.resolve("info", "example.test") == ["alice@example.test", "bob@example.test"]
    assert accounts.resolve("bob+lists", "example.test") == ["bob@example.test"]
    assert accounts.resolve("postmaster", "other.test") == ["postmaster@other.test"]
    assert accounts.resolve("Postmaster", "") == ["postmaster@example.test"]
    assert accounts.resolve("nobody", "example.test") is None
    assert accounts.resolve("alice", "elsewhere.test") is None


def test_alias_loops_end(accounts: Accounts) -> None:
    accounts.add_alias("a@example.test", "b@example.test")
    accounts.add_alias("b@example.test", "a@example.test")
    resolved = accounts.resolve("a", "example.test")  # bounded depth: an answer, never a hang
    assert resolved is not None


def test_changes_are_seen_within_the_cache_second(accounts: Accounts, clock: Clock) -> None:
    assert accounts.resolve("carol", "example.test") is None
    accounts.add_mailbox("carol@example.test")
    assert accounts.resolve("carol", "example.test") is None  # cached answer
    clock.now += 1.01
    assert accounts.resolve("carol", "example.test") == ["carol@example.test"]


def test_refused_changes_say_why(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_mailbox("ALICE@example.test")
    with pytest.raises(AccountError, match="not a local domain"):
        accounts.add_mailbox("x@elsewhere.test")
    with pytest.raises(AccountError, match="not a local domain"):
        accounts.add_alias("x@example.test", "y@elsewhere.test")
    with pytest.raises(AccountError, match="is a mailbox"):
        accounts.add_alias("alice@example.test", "bob@example.test")
    with pytest.raises(AccountError, match="of itself"):
        accounts.add_alias("x@example.test", "x@example.test")
    with pytest.raises(AccountError, match="no mailbox"):
        accounts.remove_mailbox("zed@example.test")


def test_passwords_are_argon2id_and_verify(accounts: Accounts) -> None:
    accounts.set_password("alice@example.test", hash_password("correct horse"))
    stored = accounts.password_hash("alice@example.test")
    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong")
    assert [m.has_password for m in accounts.mailboxes()] == [True, False]
