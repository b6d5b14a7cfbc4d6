"""`postroom init [PATH]`: write the commented sample configuration (never over an existing file)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any

from postroom.config import Config

__all__ = ["register", "sample_config"]


def sample_config() -> str:
    return resources.files("postroom.config").joinpath("sample.toml").read_text(encoding="utf-8")


def register(commands: Any) -> None:
    parser = commands.add_parser("init", help="write a commented sample configuration file")
    parser.add_argument("path", nargs="?", type=Path, default=Path("postroom.toml"))
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise FileExistsError(f"{path} exists; use --force to overwrite it")
    path.write_text(sample_config(), encoding="utf-8")
    print(f"wrote {path}; start with: postroom serve -c {path}")
    return 0
