"""The `postroom` command: parses arguments, hands each subcommand its config; errors: one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from postroom import __version__
from postroom.cli import accounts, admin, check, dkim, init, queue, reload, send, sendmail, serve, trace
from postroom.cli.errors import CliError
from postroom.config import Config, ConfigError, load_config

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postroom", description="postroom: a mail server.")
    parser.add_argument("--version", action="version", version=f"postroom {__version__}")
    parser.add_argument(
        "-c", "--config", type=Path, help="configuration file (default: the embedded defaults)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(commands)
    init.register(commands)
    accounts.register(commands)
    queue.register(commands)
    send.register(commands)
    reload.register(commands)
    admin.register(commands)
    dkim.register(commands)
    trace.register(commands)
    check.register(commands)
    sendmail.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = _config(args.config) if args.command != "init" else Config()
        status: int = args.handler(args, config)
    except ConfigError as exc:
        print(f"postroom: configuration error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"postroom: {exc}", file=sys.stderr)
        return exc.status
    except OSError as exc:
        print(f"postroom: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _config(path: Path | None) -> Config:
    return load_config(path)


if __name__ == "__main__":
    sys.exit(main())
