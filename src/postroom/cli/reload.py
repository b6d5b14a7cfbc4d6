"""`postroom reload`: ask the running server (pid file in data_dir) to reload (SIGHUP): its configuration
file, certificates, list files and DKIM keys. It only sends the signal: the outcome is in the server's log."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from postroom.cli.errors import EX_UNAVAILABLE, CliError
from postroom.config import Config

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "reload", help="reload the running server's configuration and certificates (SIGHUP)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    pid_file = config.data_dir / "postroom.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except FileNotFoundError:
        raise CliError(
            f"no running server for {config.data_dir} (no {pid_file.name})", EX_UNAVAILABLE
        ) from None
    except ValueError:
        raise CliError(f"{pid_file} does not hold a process id", EX_UNAVAILABLE) from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise CliError(f"no server process {pid} (stale {pid_file.name})", EX_UNAVAILABLE) from None
    print(f"asked postroom (pid {pid}) to reload; the outcome is in its log")
    return 0
