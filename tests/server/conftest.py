"""Fixtures for the server room's tests: accounts in a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.auth.accounts import Accounts
from postroom.store import open_database


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[Accounts]:
    db = open_database(tmp_path / "accounts.db")
    accounts = Accounts(db=db, domains=["example.test"])
    accounts.add_mailbox("alice@example.test")
    accounts.add_mailbox("bob@example.test")
    accounts.add_alias("team@example.test", "alice@example.test")
    accounts.add_alias("team@example.test", "bob@example.test")
    yield accounts
    db.close()
