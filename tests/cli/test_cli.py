"""The postroom command: subcommands, one-line errors, exit statuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def postroom(*args: str, cwd: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_init_writes_a_sample_that_serve_accepts(tmp_path: Path) -> None:
    result = postroom("init", "p.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p.toml").read_text().startswith("# postroom configuration")
    again = postroom("init", "p.toml", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0
    assert "exists" in again.stderr


def test_config_error_is_one_line_naming_the_key_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[smtp]\nmax_errors = 0\n")
    result = postroom("-c", "bad.toml", "serve", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "postroom: configuration error: smtp.max_errors: must be at least 1\n"


def test_user_and_alias_lifecycle(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text('[local]\ndomains = ["example.test"]\n')
    run = lambda *args, stdin="": postroom("-c", "p.toml", *args, cwd=tmp_path, stdin=stdin)  # noqa: E731
    assert run("user", "add", "Alice@Example.TEST", "--password-stdin", stdin="s3cret\n").stdout == (
        "added alice@example.test\n"
    )
    assert run("user", "add", "bob@example.test").returncode == 0
    duplicate = run("user", "add", "alice@example.test")
    assert (duplicate.returncode, duplicate.stderr) == (1, "postroom: alice@example.test already exists\n")
    foreign = run("user", "add", "x@elsewhere.test")
    assert foreign.returncode == 1
    assert "not a local domain" in foreign.stderr
    assert run("user", "list").stdout == "alice@example.test\tpassword\nbob@example.test\tno-password\n"
    assert run("alias", "add", "info@example.test", "alice@example.test").returncode == 0
    assert run("alias", "list").stdout == "info@example.test\talice@example.test\n"
    assert run("alias", "remove", "info@example.test").returncode == 0
    assert run("user", "remove", "bob@example.test").returncode == 0
    missing = run("user", "remove", "bob@example.test")
    assert (missing.returncode, missing.stderr) == (1, "postroom: no mailbox bob@example.test\n")
    assert (tmp_path / "postroom-data" / "postroom.db").exists()


def test_bad_address_is_one_line(tmp_path: Path) -> None:
    result = postroom("user", "add", "not-an-address", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "postroom: 'not-an-address' is not an address of the form local-part@domain\n"
