"""`postroom admin passwd`: set the dashboard's admin password (its argon2id hash goes to the password file)
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from postroom.admin.password import password_path, write_password_hash
from postroom.auth.passwords import hash_password
from postroom.cli.errors import EX_USAGE, CliError
from postroom.config import Config

__all__ = ["register"]


def register(commands: Any) -> None:
    admin = commands.add_parser("admin", help="the web dashboard's settings").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    passwd = admin.add_parser("passwd", help="set the admin password of the dashboard and the API")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(handler=passwd_command)


def passwd_command(args: argparse.Namespace, config: Config) -> int:
    if config.admin.password_hash:
        raise CliError("[admin] password_hash is set in the config file: change it there, or remove it")
    password = _read_password(args.password_stdin)
    path = password_path(config)
    write_password_hash(path, hash_password(password))
    print(f"admin password set (argon2id hash in {path}); a running server uses it from the next login")
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("New admin password: ")
        if password != getpass.getpass("Again: "):
            raise CliError("the two passwords differ; nothing changed", EX_USAGE)
    else:
        raise CliError("no terminal to ask for the password: use --password-stdin", EX_USAGE)
    if not password:
        raise CliError("the admin password must not be empty", EX_USAGE)
    return password
