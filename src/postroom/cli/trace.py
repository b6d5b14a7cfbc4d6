"""`postroom trace ID|ADDRESS`: the life of a message from the log file (observe/trace.py finds the lines)
merged with its state in the queue now; a readable timeline, or ``--json``."""

from __future__ import annotations

import argparse
import datetime
import json
import sqlite3
import time
from typing import Any

from postroom.cli.errors import EX_NOUSER, CliError
from postroom.cli.queue import message_json
from postroom.config import Config
from postroom.observe.trace import MessageTrace, Trace, log_files, read_log, trace_address, trace_queue_id
from postroom.queue.admin import (
    AdminError,
    InvalidQueueIdError,
    MessageView,
    QueueAdmin,
    Selection,
    open_queue_admin,
    parse_queue_id,
)

__all__ = ["describe", "register"]

_SHOWN_ELSEWHERE = {"ts", "level", "event", "room", "queue_id", "session_id"}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "trace", help="the life of a message (by queue id, or by sender or recipient address)"
    )
    parser.add_argument("target", metavar="ID|ADDRESS", help="a queue id, or an envelope address")
    parser.add_argument("--json", action="store_true", help="one JSON object with every line and state")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    path = config.log_file
    if not log_files(path):
        raise CliError(f"no log file at {path} (see [log] file)")
    target = args.target.strip()
    try:
        queue_id = parse_queue_id(target)
    except InvalidQueueIdError:
        if "@" not in target:
            raise CliError(f"{target!r} is neither a queue id (16 hex digits) nor an address") from None
        queue_id = None
    with _admin(config) as admin:
        if queue_id is not None:
            trace = trace_queue_id(read_log(path), queue_id)
        else:
            in_queue = _queued_ids(admin, target.strip("<>")) if admin is not None else []
            trace = trace_address(lambda: read_log(path), target, extra_ids=in_queue)
        states = {qid: _state(admin, qid) for qid in _ids(trace, queue_id)}
    if not trace.messages and not any(states.values()) and not trace.refused:
        raise CliError(f"nothing about {target} in {path} or in the queue", EX_NOUSER)
    if args.json:
        print(json.dumps(_json(trace, states), ensure_ascii=False, default=str))
    else:
        print("\n".join(_timeline(trace, states, now=time.time())))
    return 0


class _admin:
    """The queue admin when the database exists (the log alone is enough to trace), else None."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._admin: QueueAdmin | None = None

    def __enter__(self) -> QueueAdmin | None:
        try:
            self._admin = open_queue_admin(
                database_path=self._config.database_path, queue_dir=self._config.queue_dir
            )
        except AdminError:
            return None
        return self._admin

    def __exit__(self, *exc: object) -> None:
        if self._admin is not None:
            self._admin.close()


def _queued_ids(admin: QueueAdmin, address: str) -> list[str]:
    found: list[str] = []
    for selection in (Selection(sender=address), Selection(recipient=address)):
        found.extend(view.queue_id for view in admin.messages(selection))
    return found


def _ids(trace: Trace, queue_id: str | None) -> list[str]:
    ids = list(trace.messages)
    if queue_id is not None and queue_id not in ids:
        ids.insert(0, queue_id)
    for message in list(trace.messages.values()):
        ids.extend(bounce for bounce in message.bounces if bounce not in ids)
    return ids


def _state(admin: QueueAdmin | None, queue_id: str) -> MessageView | None:
    if admin is None:
        return None
    try:
        return admin.message(queue_id)
    except (AdminError, sqlite3.Error):
        return None


def _json(trace: Trace, states: dict[str, MessageView | None]) -> dict[str, Any]:
    messages = []
    for queue_id, view in states.items():
        message = trace.messages.get(queue_id, MessageTrace(queue_id))
        messages.append(
            {
                "queue_id": queue_id,
                "events": message.events,
                "bounces": message.bounces,
                "in_queue": view is not None,
                "queue": None if view is None else message_json(view),
            }
        )
    return {"messages": messages, "refused": trace.refused}


def _timeline(trace: Trace, states: dict[str, MessageView | None], *, now: float) -> list[str]:
    lines: list[str] = []
    for queue_id, view in states.items():
        message = trace.messages.get(queue_id, MessageTrace(queue_id))
        lines.append(f"Message {queue_id}")
        if not message.events:
            lines.append("  (no line about it in the log file)")
        lines.extend(f"  {_when(record)}  {describe(record)}" for record in message.events)
        lines.append(f"  now: {_now_state(view, now)}")
        lines.append("")
    if trace.refused:
        lines.append("Refused before any message was queued")
        lines.extend(f"  {_when(record)}  {describe(record)}" for record in trace.refused)
        lines.append("")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _now_state(view: MessageView | None, now: float) -> str:
    if view is None:
        return "not in the queue (delivered, bounced or deleted)"
    parts = []
    for recipient in view.recipients:
        state = "delivering" if recipient.in_delivery(now) else recipient.state
        parts.append(f"<{recipient.address}> {state}")
    held = "held; " if view.held else ""
    return f"in the queue ({held}{', '.join(parts)})"


def _when(record: dict[str, Any]) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(float(record.get("ts", 0))).astimezone()
    except (TypeError, ValueError, OverflowError):
        return "?" * 19
    return moment.isoformat(sep=" ", timespec="seconds")[:19]


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


_SENTENCES = {
    "session.connect": "connect from {client} on {listener} (session {session_id})",
    "session.close": "disconnect ({reason}, {messages} message(s) in the session)",
    "auth.ok": "authenticated as {user}",
    "auth.failed": "authentication failed ({reason})",
    "smtp.rcpt_accepted": "RCPT <{rcpt}> accepted: {reply}",
    "smtp.rejected": "{command} {argument} refused: {reply}",
    "message.queued": "queued from <{sender}>: {rcpts} recipient(s), {size} bytes",
    "message.refused": "message refused: {reply} ({reason})",
    "delivery.transaction": "sent to {host} [{address}], TLS {tls}",
    "delivery.host_failed": "host {host} [{address}] failed: {error}",
    "delivery.delivered": "delivered to <{rcpt}> (attempt {attempts})",
    "delivery.deferred": "deferred <{rcpt}> (attempt {attempts}): {error}",
    "delivery.failed": "failed <{rcpt}> (attempt {attempts}): {error}",
    "delivery.bounced": "bounce {dsn_id} queued to <{sender}>",
    "message.removed": "removed from the queue",
}


def describe(record: dict[str, Any]) -> str:
    """One line for a log record: a sentence for the known mail events, else the event and its fields."""
    event = str(record.get("event", "?"))
    template = _SENTENCES.get(event)
    if template is not None:
        return template.format_map(_Fields(record))
    rest = " ".join(f"{key}={value}" for key, value in record.items() if key not in _SHOWN_ELSEWHERE)
    return f"{event} {rest}".rstrip()
