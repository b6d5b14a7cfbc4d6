"""`postroom sendmail` and the `postroom-sendmail` script: the classic sendmail command line for cron and
scripts (-t -i -oi -f -F -bs -bp -C), legacy flags accepted and ignored, exit statuses from sysexits.h.

This module reads the command line and standard input and builds the message; where the message goes is
sendmail_handoff's, the header work sendmail_message's, the -bs conversation server.stdio's.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import secrets
import sqlite3
import sys
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from postroom.app import open_accounts
from postroom.auth.accounts import Accounts
from postroom.cli import queue as queue_cli
from postroom.cli.errors import EX_DATAERR, EX_TEMPFAIL, EX_USAGE, CliError
from postroom.cli.sendmail_handoff import Submission, hand_off, recipient_refusal
from postroom.cli.sendmail_message import Message, MessageTooBigError, read_message
from postroom.config import Config, ConfigError, load_config
from postroom.server.stdio import StdioMessage, StdioSession
from postroom.smtp import replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.grammar import parse_path
from postroom.smtp.server import ServerSettings
from postroom.smtp.types import Address, Reply

__all__ = ["Options", "main", "parse_arguments", "register"]

DEFAULT_CONFIG = Path("/etc/postroom.toml")  # used by postroom-sendmail when neither -C nor $POSTROOM_CONFIG
# Flags that take a value (attached, "-fme@x", or the next argument, "-f me@x"); all but -C -F -f -r ignored.
_WITH_VALUE = frozenset("ABCFLNORVXfhpr")


@dataclass
class Options:
    """The sendmail command line, parsed."""

    mode: str = "m"  # -bm deliver (the default), -bs SMTP on stdin/stdout, -bp list the queue
    extract: bool = False  # -t
    dot_ends: bool = True  # cleared by -i / -oi
    sender: str | None = None  # -f / -r
    full_name: str = ""  # -F
    config: Path | None = None  # -C
    recipients: list[str] = field(default_factory=list)


def parse_arguments(argv: Sequence[str]) -> Options:
    """sendmail's getopt-style flags (clustered "-ti", attached or separate values); unknown ones ignored.
    Raises CliError (EX_USAGE) for a flag missing its value or a mode we do not have."""
    options = Options()
    arguments = list(argv)
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if argument == "--" or not argument.startswith("-") or argument == "-":
            options.recipients += arguments[index - (argument != "--") :]
            break
        letters = argument[1:]
        for position, letter in enumerate(letters):
            if letter in _WITH_VALUE or letter in "bo":
                value = letters[position + 1 :]
                if not value and letter not in "o":
                    if index == len(arguments):
                        raise CliError(f"option -{letter} needs a value", EX_USAGE)
                    value, index = arguments[index], index + 1
                _apply(options, letter, value)
                break
            if letter == "q":
                break  # -q, -q15m: queue runs are the server's own business
            if letter == "t":
                options.extract = True
            elif letter == "i":
                options.dot_ends = False
            # any other letter (-v -n -m -U -G -x -c ...) is accepted and ignored
    return options


def _apply(options: Options, letter: str, value: str) -> None:
    if letter in "fr":
        options.sender = value
    elif letter == "F":
        options.full_name = value
    elif letter == "C":
        options.config = Path(value)
    elif letter == "o" and value.startswith("i"):
        options.dot_ends = False  # -oi (also -oiTrue); other -o options (-odi, -oem, -oQ...) are ignored
    elif letter == "b":
        if value not in ("m", "s", "p"):
            raise CliError(f"-b{value} is not supported (only -bm, -bs and -bp)", EX_USAGE)
        options.mode = value


# --- entry points --------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    # "+" as the prefix: every "-x" token (sendmail's flags) reaches parse_arguments untouched.
    parser = commands.add_parser(
        "sendmail", help="sendmail-compatible: -t -i -oi -f -F -bs -bp -C (see docs/sendmail.md)",
        prefix_chars="+", add_help=False,
    )  # fmt: skip
    parser.add_argument("arguments", nargs="*", help="sendmail flags and recipients")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    options = parse_arguments(args.arguments)
    if options.config is not None:
        config = load_config(options.config)
    return _run(options, config)


def main(argv: Sequence[str] | None = None) -> int:
    """The `postroom-sendmail` console script (a drop-in for /usr/sbin/sendmail)."""
    try:
        options = parse_arguments(sys.argv[1:] if argv is None else argv)
        return _run(options, load_config(_config_path(options)))
    except ConfigError as exc:
        print(f"sendmail: message not sent: configuration error: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except CliError as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return EX_TEMPFAIL


def _config_path(options: Options) -> Path | None:
    if options.config is not None:
        return options.config
    from_environment = os.environ.get("POSTROOM_CONFIG")
    if from_environment:
        return Path(from_environment)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def _run(options: Options, config: Config) -> int:
    if options.mode == "p":
        listing = argparse.Namespace(sender=None, recipient=None, domain=None, state=None, json=False)
        return queue_cli.list_command(listing, config)
    composer = Composer(options=options, config=config)
    if options.mode == "s":
        return composer.serve_stdio()
    return composer.send_stdin()


# --- building and sending ------------------------------------------------------------------------------


@dataclass
class Composer:
    """Turns the options, standard input and the config into submissions."""

    options: Options
    config: Config
    user: str = field(default_factory=lambda: _login_name())  # noqa: PLW0108 - defined further down

    @property
    def origin(self) -> str:
        return self.config.local.domains[0]  # unqualified names are ours, like Postfix's myorigin

    def send_stdin(self) -> int:
        options = self.options
        sender = self._sender()
        recipients = [self.address(text, "recipient") for text in _split(options.recipients)]
        try:
            data = read_message(
                sys.stdin.buffer, dot_ends=options.dot_ends, limit=self.config.smtp.max_message_size
            )
        except MessageTooBigError as exc:
            raise CliError(f"message not sent: {exc}", EX_DATAERR) from None
        message = Message.parse(data)
        if options.extract:
            recipients += [self.address(text, "recipient") for text in message.recipients()]
            message.remove("bcc")  # -t: Bcc recipients get the mail, nobody sees them
        if not recipients:
            what = "in the To, Cc or Bcc headers" if options.extract else "(give addresses, or -t)"
            raise CliError(f"message not sent: no recipients {what}", EX_USAGE)
        queue_id = self._submit(sender, recipients, message)
        del queue_id  # sendmail is silent on success
        return 0

    def serve_stdio(self) -> int:
        """-bs: our SMTP server's protocol on stdin/stdout; each message goes the same way as -bm's."""
        try:
            accounts, db = open_accounts(self.config)
        except (OSError, sqlite3.Error):
            accounts, db = None, None  # no access to the data folder: the running server checks instead
        settings = ServerSettings(
            hostname=self.config.hostname,
            max_message_size=self.config.smtp.max_message_size,
            long_lines=self.config.smtp.long_lines,
            bare_line_endings=self.config.smtp.bare_line_endings,
            chunking=False,
        )
        session = StdioSession(
            settings=settings,
            check_recipient=lambda address: self._check_recipient(address, accounts),
            deliver=self._deliver_stdio,
        )
        try:
            session.run(typing.cast(io.BufferedReader, sys.stdin.buffer), sys.stdout.buffer)
        finally:
            if db is not None:
                db.close()
        return 0

    def _check_recipient(self, address: Address, accounts: Accounts | None) -> Reply | None:
        if accounts is None:
            return None
        refusal = recipient_refusal(self._qualified(address), accounts)
        if refusal is None:
            return None
        return replies.RELAY_DENIED if "literal" in refusal else replies.NO_SUCH_USER

    def _deliver_stdio(self, message: StdioMessage) -> Reply:
        sender = "" if message.sender is None else str(message.sender)
        recipients = [self._qualified(address) for address in message.recipients]
        try:
            queue_id = self._submit(sender, recipients, Message.parse(message.body))
        except CliError as exc:
            print(f"sendmail: {exc}", file=sys.stderr)
            return replies.QUEUE_UNAVAILABLE if exc.status == EX_TEMPFAIL else replies.TRANSACTION_FAILED
        return replies.queued(queue_id)

    def _submit(self, sender: str, recipients: list[Address], message: Message) -> str:
        unique = f"{time.time_ns():x}.{secrets.token_hex(4)}"
        message.complete(
            sender=sender or f"{self.user}@{self.origin}",
            full_name=self.options.full_name,
            hostname=self.config.hostname,
            unique=unique,
            now=time.time(),
        )
        once = tuple(dict.fromkeys(recipients))
        submission = Submission(sender=sender, recipients=once, data=message.to_bytes(), user=self.user)
        return hand_off(submission, self.config)

    def _sender(self) -> str:
        given = self.options.sender
        if given is None:
            return f"{self.user}@{self.origin}"
        if given.strip() in ("", "<>"):
            return ""  # the null sender (bounces of bounces are never sent)
        return str(self.address(given, "sender"))

    def address(self, text: str, role: str) -> Address:
        """An address from the command line or a header; a bare name gets our first local domain."""
        text = text.strip().removeprefix("<").removesuffix(">")
        if text and "@" not in text:
            text = f"{text}@{self.origin}"
        try:
            address, _, _ = parse_path(f"<{text}>", bad=replies.BAD_RECIPIENT_ADDRESS)
        except SmtpError:
            address = None
        if address is None:
            raise CliError(f"message not sent: bad {role} address {text!r}", EX_USAGE)
        return address

    def _qualified(self, address: Address) -> Address:
        return address if address.domain else Address(address.local_part, self.origin)  # <Postmaster>


def _split(arguments: Sequence[str]) -> list[str]:
    """Recipient arguments may hold several addresses each ("a@x, b@y"), with or without names."""
    return [address for _, address in getaddresses(list(arguments)) if address]


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
