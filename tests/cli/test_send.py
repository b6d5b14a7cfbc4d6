"""`postroom send` against a real server: STARTTLS with the server's own self-signed certificate, AUTH,
an attachment, and one-line errors with sysexits.h statuses."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.app import open_accounts
from postroom.auth.passwords import hash_password
from tests.helpers.server import ServerThread, maildir_messages, server_thread, wait_for, write_config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    config, config_file = write_config(tmp_path)
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("alice@postroom.test", password_hash=hash_password("pw-alice"))
        accounts.add_mailbox("bob@postroom.test")
    finally:
        db.close()
    with server_thread(config) as server:
        yield server, config_file


def send(
    config_file: Path,
    server: ServerThread,
    *args: str,
    password: str = "pw-alice",
    listener: str = "submission",
) -> subprocess.CompletedProcess[str]:
    assert server.app is not None
    host, port = server.app.address(listener)
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "send", f"--server={host}:{port}", *args],
        input=f"{password}\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_send_with_attachment_over_starttls_and_auth(
    served: tuple[ServerThread, Path], tmp_path: Path
) -> None:
    server, config_file = served
    attachment = tmp_path / "report.pdf"
    attachment.write_bytes(b"%PDF-1.4 fake but binary \x00\xff")
    result = send(
        config_file, server, "--from", "alice@postroom.test", "--to", "bob@postroom.test",
        "--subject", "Report", "--body", "See attached.", "--attach", str(attachment), "--password-stdin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent: ")
    (path,) = wait_for(lambda: maildir_messages(server.config, "bob@postroom.test"), what="delivery")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Report"
    assert message["Message-ID"] is not None
    parts = list(message.iter_attachments())
    assert [p.get_filename() for p in parts] == ["report.pdf"]
    assert parts[0].get_content() == b"%PDF-1.4 fake but binary \x00\xff"


def test_wrong_password_is_one_line_exit_77(served: tuple[ServerThread, Path]) -> None:
    server, config_file = served
    result = send(
        config_file, server, "--from", "alice@postroom.test", "--to", "bob@postroom.test", "--body", "x",
        "--password-stdin", password="nope",
    )  # fmt: skip
    assert result.returncode == 77
    assert (
        result.stderr
        == "postroom: login refused by the server: 535 5.7.8 Authentication credentials invalid\n"
    )


def test_unreachable_server_is_one_line_exit_69(tmp_path: Path) -> None:
    _, config_file = write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "send", "--server", "127.0.0.1:1",
         "--from", "a@postroom.test", "--to", "b@postroom.test", "--body", "x"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 69
    assert result.stderr.startswith("postroom: cannot reach 127.0.0.1:1: ")
    assert result.stderr.count("\n") == 1
