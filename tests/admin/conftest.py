"""Fixtures: a running postroom with its admin HTTP listener on a loopback port, and an admin password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.auth.passwords import hash_password
from postroom.config import Config
from tests.helpers.server import ServerThread, make_config, server_thread

ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def admin_hash() -> str:
    return hash_password(ADMIN_PASSWORD)


@pytest.fixture
def admin_config(tmp_path: Path, admin_hash: str) -> Config:
    return make_config(
        tmp_path,
        admin={"listen": "127.0.0.1:0", "password_hash": admin_hash},
        smtp={"relay_networks": ["127.0.0.0/8"]},  # so a test can queue mail for a remote domain
    )


@pytest.fixture
def admin_server(admin_config: Config) -> Iterator[ServerThread]:
    with server_thread(admin_config) as server:
        yield server


def base_url(server: ServerThread) -> str:
    assert server.app is not None
    host, port = server.app.address("admin")
    return f"http://{host}:{port}"
