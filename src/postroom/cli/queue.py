"""`postroom queue ...`: list, show, retry, flush, hold, release and delete queued messages.

Works on the data folder of a running server from a second shell (see docs/queue.md): the changes are made
in the database, and the server's scheduler sees them at its next poll. The queries and the spool files are
``postroom.queue.admin``'s; this module parses options and prints.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from postroom.cli import queue_bounce
from postroom.cli.accounts import CommandError
from postroom.config import Config
from postroom.queue.admin import (
    AdminError,
    MessageView,
    QueueAdmin,
    RecipientView,
    Selection,
    open_queue_admin,
    parse_queue_id,
    read_headers,
)

__all__ = ["format_age", "format_message", "message_json", "register"]

_STATES = ("queued", "deferred", "held", "failed")
Handler = Callable[[argparse.Namespace, Config], int]


def register(commands: Any) -> None:
    queue = commands.add_parser(
        "queue", help="inspect and manage the mail queue (safe while the server runs)"
    ).add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = queue.add_parser("list", help="list queued messages (like mailq)")
    _add_filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per message and line")
    listing.set_defaults(handler=list_command)
    show = queue.add_parser("show", help="one message: envelope, recipients, attempts, headers")
    show.add_argument("queue_id", metavar="ID")
    content = show.add_mutually_exclusive_group()
    content.add_argument("--body", action="store_true", help="print the whole message after the envelope")
    content.add_argument("--raw", action="store_true", help="print only the message, byte for byte")
    show.set_defaults(handler=show_command)
    queue.add_parser("flush", help="make every waiting recipient due now").set_defaults(handler=flush_command)
    for name, summary, handler in (
        ("retry", "make recipients due now (the server tries them at its next poll)", retry_command),
        ("hold", "keep messages from delivery until released", hold_command),
        ("release", "let held messages be delivered again", release_command),
        ("delete", "remove messages from the queue, without a bounce", delete_command),
    ):
        action = queue.add_parser(name, help=summary)
        action.add_argument("queue_ids", metavar="ID", nargs="*", help="queue ids (as in 'queued as ...')")
        action.add_argument("--all", action="store_true", help="every message (narrowed by the filters)")
        _add_filters(action)
        action.set_defaults(handler=handler)
    queue_bounce.register(queue)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sender", help="envelope sender (exact, any case; '<>' is the null sender)")
    parser.add_argument("--recipient", help="a recipient address or its mailbox (exact, any case)")
    parser.add_argument("--domain", help="a recipient domain (exact, any case)")
    parser.add_argument("--state", choices=_STATES, help="messages with a recipient in this state, or held")


# --- errors and selections ---------------------------------------------------------------------------


def _refusals(handler: Handler) -> Handler:
    """Turns the admin's refusals and database errors into one-line CommandErrors; a closed pipe is quiet."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, config: Config) -> int:
        try:
            return handler(args, config)
        except AdminError as exc:
            raise CommandError(str(exc)) from None
        except sqlite3.Error as exc:
            raise CommandError(f"queue database {config.database_path}: {exc}") from None
        except BrokenPipeError:  # `postroom queue list | head`: the reader has all it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0

    return run


@contextmanager
def _admin(config: Config, *, changing: str = "") -> Iterator[QueueAdmin]:
    """The queue, opened for one command; ``changing`` names what a bulk change does, for its progress."""
    with (
        _progress(changing) as progress,
        open_queue_admin(
            database_path=config.database_path, queue_dir=config.queue_dir, progress=progress
        ) as admin,
    ):
        yield admin


@contextmanager
def _progress(doing: str) -> Iterator[Callable[[int], None] | None]:
    """A live count of a bulk change on stderr (rich) when stderr is a terminal; nothing otherwise."""
    if not doing or not sys.stderr.isatty():
        yield None
        return
    # imported here: every `postroom` command (sendmail from cron too) would pay for rich otherwise
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    count_text = TextColumn("{task.description}: {task.completed:,.0f}")
    columns = (SpinnerColumn(), count_text, TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(doing, total=None)
        yield lambda count: bar.update(task, completed=count)


def _filters(args: argparse.Namespace) -> Selection:
    sender = args.sender
    if sender is not None:
        sender = sender.strip()
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]
    return Selection(sender=sender, recipient=args.recipient, domain=args.domain, state=args.state)


def _has_filters(args: argparse.Namespace) -> bool:
    return any(value is not None for value in (args.sender, args.recipient, args.domain, args.state))


def _selection(args: argparse.Namespace, *, filters_alone: bool = False) -> Selection:
    """IDs, or --all (narrowed by filters); for retry, filters alone will do."""
    if args.queue_ids and (args.all or _has_filters(args)):
        raise CommandError("give queue ids, or --all and filters, not both")
    if args.queue_ids:
        return Selection(queue_ids=tuple(dict.fromkeys(parse_queue_id(text) for text in args.queue_ids)))
    if args.all or (filters_alone and _has_filters(args)):
        return _filters(args)
    extra = "" if not filters_alone else ", or a filter"
    raise CommandError(
        f"{args.action}: give a queue id or --all{extra} (see postroom queue {args.action} -h)"
    )


# --- list and show -----------------------------------------------------------------------------------


@_refusals
def list_command(args: argparse.Namespace, config: Config) -> int:
    selection = _filters(args)
    now = time.time()
    messages = recipients = size = 0
    with _admin(config) as admin:
        for view in admin.messages(selection):
            if args.json:
                print(json.dumps(message_json(view), ensure_ascii=False))
            else:
                print("\n".join(format_message(view, now=now)), end="\n\n")
            messages += 1
            recipients += len(view.recipients)
            size += view.size
    if messages == 0 and not args.json:
        print("No message in the queue matches" if _has_filters(args) else "Mail queue is empty")
    elif not args.json:
        kib = math.ceil(size / 1024)
        print(f"{_count(messages, 'message')}, {_count(recipients, 'recipient')}, {kib} KiB")
    return 0


@_refusals
def show_command(args: argparse.Namespace, config: Config) -> int:
    queue_id = parse_queue_id(args.queue_id)
    with _admin(config) as admin:
        view = admin.message(queue_id)
        with admin.open_content(view) as content:
            if args.raw:
                _write_bytes(content.read())
                return 0
            print("\n".join(_envelope_lines(view, now=time.time(), config=config)))
            if args.body:
                print("\nMessage:", flush=True)
                _write_bytes(content.read())
                return 0
            headers = read_headers(content)
    print("\nHeaders:")
    text = headers.decode("utf-8", "replace").replace("\r\n", "\n")
    print("\n".join(_clean(line) for line in text.splitlines()))
    return 0


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _envelope_lines(view: MessageView, *, now: float, config: Config) -> list[str]:
    if view.spooled:
        where = f"spool file {config.queue_dir / 'spool' / view.queue_id}"
    else:
        where = "inline in the queue database"
    lines = [
        f"Queue ID:   {view.queue_id}",
        f"Status:     {'held (not delivered until released)' if view.held else 'active'}",
        f"Arrived:    {_timestamp(view.received_at)} ({format_age(now - view.received_at)} ago)",
        f"Size:       {view.size} bytes, {where}",
        f"Sender:     <{_clean(view.sender)}>",
        f"Client:     {_clean(view.client_ip) or '-'} (HELO {_clean(view.helo) or '-'})",
        "Recipients:",
    ]
    for recipient in view.recipients:
        lines.append(f"  {_recipient_name(recipient)}")
        lines.append(f"    state: {recipient.state}, attempts: {recipient.attempts}")
        if recipient.next_attempt_at is not None:
            when = _until(recipient.next_attempt_at, now)
            lines.append(f"    next attempt: {_timestamp(recipient.next_attempt_at)} ({when})")
        if recipient.last_error is not None:
            lines.append(f"    last error: {_clean(recipient.last_error)}")
    return lines


# --- changes -----------------------------------------------------------------------------------------


@_refusals
def retry_command(args: argparse.Namespace, config: Config) -> int:
    return _retry(_selection(args, filters_alone=True), config)


@_refusals
def flush_command(args: argparse.Namespace, config: Config) -> int:
    return _retry(Selection(), config)


def _retry(selection: Selection, config: Config) -> int:
    with _admin(config, changing="recipients made due") as admin:
        count = admin.retry(selection)
    if count:
        poll = f"{config.delivery.poll_interval:g}s"
        them = "it" if count == 1 else "them"
        print(
            f"{_count(count, 'recipient')} due now; the server tries {them} within {poll} (its poll interval)"
        )
    else:
        print("nothing to retry: no waiting recipient of an active message matched")
    return 0


@_refusals
def hold_command(args: argparse.Namespace, config: Config) -> int:
    return _set_held(args, config, held=True)


@_refusals
def release_command(args: argparse.Namespace, config: Config) -> int:
    return _set_held(args, config, held=False)


def _set_held(args: argparse.Namespace, config: Config, *, held: bool) -> int:
    selection = _selection(args)
    verb, status = ("held", "held") if held else ("released", "active")
    with _admin(config, changing=f"messages {verb}") as admin:
        count = admin.hold(selection) if held else admin.release(selection)
    print(f"{verb} {_count(count, 'message')}{_unchanged(selection, count, status)}")
    return 0


@_refusals
def delete_command(args: argparse.Namespace, config: Config) -> int:
    selection = _selection(args)
    with _admin(config, changing="messages deleted") as admin:
        deleted = admin.delete(selection)
    print(f"deleted {_count(deleted.messages, 'message')}")
    for stray in deleted.stray_files:
        print(f"postroom: warning: could not remove {stray} (its message is deleted)", file=sys.stderr)
    return 0


def _unchanged(selection: Selection, count: int, status: str) -> str:
    if selection.queue_ids is None or count == len(selection.queue_ids):
        return ""
    return f" ({len(selection.queue_ids) - count} already {status})"


# --- formatting (pure) -------------------------------------------------------------------------------


def format_message(view: MessageView, *, now: float) -> list[str]:
    """One mailq-style block: id (``!`` when held), age, size, sender; a line per recipient."""
    held = "!" if view.held else " "
    tail = "  (held)" if view.held else ""
    lines = [
        f"{view.queue_id}{held} {format_age(now - view.received_at):>4} {view.size:>9}  "
        f"<{_clean(view.sender)}>{tail}"
    ]
    for recipient in view.recipients:
        line = f"    {recipient.state:<9} {_recipient_name(recipient)}"
        if recipient.state in ("queued", "deferred") and recipient.attempts:
            line += f"  ({_attempts(recipient, now)})"
        lines.append(line)
        if recipient.last_error is not None:
            lines.append(f"              {_clean(recipient.last_error)}")
    return lines


def message_json(view: MessageView) -> dict[str, Any]:
    """The ``--json`` object of one message (field names follow ``postqueue -j`` where it has them)."""
    return {
        "queue_id": view.queue_id,
        "arrival_time": int(view.received_at),
        "message_size": view.size,
        "sender": view.sender,
        "held": view.held,
        "recipients": [_recipient_json(recipient) for recipient in view.recipients],
    }


def _recipient_json(recipient: RecipientView) -> dict[str, Any]:
    return {
        "address": recipient.address,
        "mailbox": recipient.mailbox,
        "state": recipient.state,
        "attempts": recipient.attempts,
        "next_attempt_at": None if recipient.next_attempt_at is None else int(recipient.next_attempt_at),
        "last_error": recipient.last_error,
        "claimed_until": None if recipient.claimed_until is None else int(recipient.claimed_until),
    }


def format_age(seconds: float) -> str:
    """The largest whole unit: "45s", "3m", "2h", "4d"."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _attempts(recipient: RecipientView, now: float) -> str:
    """ "2 attempts, next in 5m"; a claim without an outcome yet: "attempt 1 under way, lease ends in 9m"."""
    when = _until(recipient.next_attempt_at, now)
    if recipient.in_delivery(now):  # claimed, no outcome recorded yet: a delivery holds it right now
        return f"attempt {recipient.attempts} under way, lease ends {when}"
    return f"{_count(recipient.attempts, 'attempt')}, next {when}"


def _until(moment: float | None, now: float) -> str:
    if moment is None or moment <= now:
        return "now"
    return f"in {format_age(moment - now)}"


def _recipient_name(recipient: RecipientView) -> str:
    name = f"<{_clean(recipient.address)}>"
    if recipient.mailbox != recipient.address.lower():
        name += f" -> {_clean(recipient.mailbox)}"
    return name


def _timestamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).astimezone().isoformat(sep=" ", timespec="seconds")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _clean(text: str) -> str:
    """Text from clients or errors, safe for a terminal: control characters shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)
