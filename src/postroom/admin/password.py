"""Where the admin password's argon2id hash lives ([admin] password_hash, else a file) and how it is written.

Hashing and verifying are the auth room's job: app.py hands the admin listener a checking function.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from postroom.config.schema import Config

__all__ = ["password_path", "read_password_hash", "write_password_hash"]


def password_path(config: Config) -> Path:
    """The file that holds the admin password's hash: [admin] password_file, else data_dir/admin-password."""
    return config.admin.password_file or config.data_dir / "admin-password"


def read_password_hash(config: Config) -> str | None:
    """The configured hash, or the one in the password file (read each time: a new one needs no restart);
    None when there is none."""
    if config.admin.password_hash:
        return config.admin.password_hash
    try:
        text = password_path(config).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def write_password_hash(path: Path, password_hash: str) -> None:
    """Replace the file atomically (temporary file, fsync, rename), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (password_hash + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
