"""Fixtures: a real postroom on a loopback port with a few mailboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import open_accounts
from postroom.config import Config
from tests.helpers.server import ServerThread, make_config, server_thread


def add_accounts(config: Config) -> None:
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("alice@postroom.test")
        accounts.add_mailbox("bob@postroom.test")
        accounts.add_mailbox("carol@other.test")
        accounts.add_alias("info@postroom.test", "alice@postroom.test")
        accounts.add_alias("team@postroom.test", "alice@postroom.test")
        accounts.add_alias("team@postroom.test", "bob@postroom.test")
    finally:
        db.close()


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override in a test module (or parametrize) to change the server's config."""
    return {}


@pytest.fixture
def config(tmp_path: Path, config_overrides: dict[str, Any]) -> Config:
    config = make_config(tmp_path, **config_overrides)
    add_accounts(config)
    return config


@pytest.fixture
def server(config: Config) -> Iterator[ServerThread]:
    with server_thread(config) as running:
        yield running
