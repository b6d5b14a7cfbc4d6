"""`postroom user ...` and `postroom alias ...`: mailboxes and aliases in the data folder's database."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from postroom.app import open_accounts
from postroom.auth.accounts import AccountError
from postroom.auth.passwords import hash_password
from postroom.auth.scram import make_secrets
from postroom.cli.errors import CliError
from postroom.config import Config

__all__ = ["CommandError", "register"]


class CommandError(CliError):
    """A refused account change; printed as one line, exit 1."""


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="manage mailboxes").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    add = user.add_parser("add", help="create a mailbox")
    add.add_argument("address")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(handler=user_add)
    user.add_parser("list", help="list mailboxes").set_defaults(handler=user_list)
    remove = user.add_parser("remove", help="delete a mailbox (its Maildir stays on disk)")
    remove.add_argument("address")
    remove.set_defaults(handler=user_remove)
    passwd = user.add_parser("passwd", help="set a mailbox's password")
    passwd.add_argument("address")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    passwd.set_defaults(handler=user_passwd)

    alias = commands.add_parser("alias", help="manage aliases").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    alias_add = alias.add_parser("add", help="deliver mail for ADDRESS to TARGET")
    alias_add.add_argument("address")
    alias_add.add_argument("target")
    alias_add.set_defaults(handler=alias_add_command)
    alias.add_parser("list", help="list aliases").set_defaults(handler=alias_list)
    alias_remove = alias.add_parser("remove", help="remove an alias (all its targets, or one)")
    alias_remove.add_argument("address")
    alias_remove.add_argument("target", nargs="?")
    alias_remove.set_defaults(handler=alias_remove_command)


def _run(config: Config, action: Any) -> int:
    accounts, db = open_accounts(config)
    try:
        action(accounts)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    finally:
        db.close()
    return 0


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password (empty for none): ")
    else:
        return None
    return password or None


def _scram(password: str, config: Config) -> str | None:
    """SCRAM-SHA-256 secrets for the password, kept beside its argon2id hash."""
    secrets = make_secrets(password, iterations=config.auth.scram_iterations)
    if secrets is None:
        print(
            "note: SCRAM-SHA-256 cannot use this password (SASLprep refuses it); PLAIN and LOGIN can",
            file=sys.stderr,
        )
        return None
    return secrets.encode()


def user_add(args: argparse.Namespace, config: Config) -> int:
    password = _read_password(args)
    if args.password_stdin and password is None:
        raise CommandError("no password on standard input")
    password_hash = hash_password(password) if password else None
    scram = _scram(password, config) if password else None

    def action(accounts: Any) -> None:
        print(f"added {accounts.add_mailbox(args.address, password_hash=password_hash, scram=scram)}")

    return _run(config, action)


def user_passwd(args: argparse.Namespace, config: Config) -> int:
    password = _read_password(args)
    if password is None:
        raise CommandError("no password given")
    password_hash, scram = hash_password(password), _scram(password, config)
    return _run(config, lambda accounts: accounts.set_password(args.address, password_hash, scram=scram))


def user_list(args: argparse.Namespace, config: Config) -> int:
    def action(accounts: Any) -> None:
        for mailbox in accounts.mailboxes():
            print(f"{mailbox.address}\t{'password' if mailbox.has_password else 'no-password'}")

    return _run(config, action)


def user_remove(args: argparse.Namespace, config: Config) -> int:
    def action(accounts: Any) -> None:
        accounts.remove_mailbox(args.address)
        print(f"removed {args.address}")

    return _run(config, action)


def alias_add_command(args: argparse.Namespace, config: Config) -> int:
    def action(accounts: Any) -> None:
        alias = accounts.add_alias(args.address, args.target)
        print(f"added {alias.address} -> {alias.target}")

    return _run(config, action)


def alias_list(args: argparse.Namespace, config: Config) -> int:
    def action(accounts: Any) -> None:
        for alias in accounts.aliases():
            print(f"{alias.address}\t{alias.target}")

    return _run(config, action)


def alias_remove_command(args: argparse.Namespace, config: Config) -> int:
    def action(accounts: Any) -> None:
        count = accounts.remove_alias(args.address, args.target)
        print(f"removed {count} alias{'es' if count != 1 else ''}")

    return _run(config, action)
