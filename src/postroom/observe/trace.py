"""Reads the JSON log file back and picks out the life of messages: by queue id, or by an address as sender
or recipient. Session lines (before a queue id exists) are tied to a message by its ``message.queued`` line,
which carries both ids; a bounce by its ``dsn_id``. No formatting and no queue state here (cli/trace.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MessageTrace", "Trace", "log_files", "read_log", "trace_address", "trace_queue_id"]

Record = dict[str, Any]


@dataclass
class MessageTrace:
    """Every log line of one message (its session's lines too), in log order."""

    queue_id: str
    events: list[Record] = field(default_factory=list)
    bounces: list[str] = field(default_factory=list)  # queue ids of the DSNs sent for it


@dataclass
class Trace:
    """What the log says: the messages found, and refused recipients that never became a message."""

    messages: dict[str, MessageTrace] = field(default_factory=dict)
    refused: list[Record] = field(default_factory=list)


def log_files(path: Path) -> list[Path]:
    """The log file and its first rotated copy (``.1``, left by logrotate), oldest first; those that exist."""
    rotated = path.with_name(path.name + ".1")
    return [candidate for candidate in (rotated, path) if candidate.is_file()]


def read_log(path: Path) -> Iterator[Record]:
    """The records of the log file (and its rotated copy), streamed; lines that are not JSON objects are
    skipped (a line cut short by a crash, or a text line from elsewhere)."""
    for file_path in log_files(path):
        with open(file_path, encoding="utf-8", errors="replace") as file:
            for line in file:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "event" in record:
                    yield record


def trace_queue_id(records: Iterable[Record], queue_id: str) -> Trace:
    """The life of one message (and of its bounces, as their own messages)."""
    return _collect(records, queue_ids={queue_id})


def trace_address(
    source: Callable[[], Iterable[Record]], address: str, *, extra_ids: Iterable[str] = ()
) -> Trace:
    """The life of every message ``address`` sent or was sent (plus ``extra_ids``, e.g. found in the queue),
    and the RCPTs refused for it. ``source`` gives the records afresh: one pass finds the messages, a second
    gathers their lines (session lines come before the line that names the message)."""
    ids, refused = _matching_ids(source(), address.strip().strip("<>"))
    ids.update(extra_ids)
    return _collect(source(), queue_ids=ids, refused=refused)


def _collect(records: Iterable[Record], *, queue_ids: set[str], refused: list[Record] | None = None) -> Trace:
    """Lines of the given messages: those carrying their queue id, and their session's lines (a session's
    lines are buffered until its ``message.queued`` line says which message they belong to)."""
    trace = Trace(refused=refused or [])
    session_lines: dict[str, list[Record]] = {}
    session_of: dict[str, str] = {}  # session id -> the (first) wanted queue id it produced
    for record in records:
        event, queue_id = record["event"], _text(record.get("queue_id"))
        session_id = _text(record.get("session_id"))
        if event == "delivery.bounced" and queue_id in queue_ids:
            dsn_id = _text(record.get("dsn_id"))
            if dsn_id:
                queue_ids.add(dsn_id)  # follow the bounce too
                trace.messages.setdefault(queue_id, MessageTrace(queue_id)).bounces.append(dsn_id)
        if queue_id:
            earlier = session_lines.pop(session_id, []) if event == "message.queued" else []
            if queue_id in queue_ids:
                message = trace.messages.setdefault(queue_id, MessageTrace(queue_id))
                message.events.extend(earlier)
                message.events.append(record)
                if session_id:
                    session_of[session_id] = queue_id
        elif session_id:
            session_lines.setdefault(session_id, []).append(record)
            if event == "session.close":
                lines = session_lines.pop(session_id)
                if session_id in session_of:  # the end of a session that queued a wanted message
                    trace.messages[session_of.pop(session_id)].events.extend(lines)
    return trace


def _matching_ids(records: Iterable[Record], address: str) -> tuple[set[str], list[Record]]:
    """Queue ids of messages from or to ``address`` and the RCPT refusals for it (first pass)."""
    wanted = address.lower()
    ids: set[str] = set()
    refused: list[Record] = []
    pending: dict[str, bool] = {}  # session id -> an accepted RCPT in its open transaction is the address
    for record in records:
        event = record["event"]
        session_id = _text(record.get("session_id"))
        if event == "smtp.rcpt_accepted" and _same(record.get("rcpt"), wanted):
            pending[session_id] = True
        elif event == "smtp.rejected" and wanted in _text(record.get("argument")).lower():
            refused.append(record)
        elif event == "message.queued":
            if pending.pop(session_id, False) or _same(record.get("sender"), wanted):
                ids.add(_text(record.get("queue_id")))
        elif event.startswith("delivery.") and _same(record.get("rcpt"), wanted):
            ids.add(_text(record.get("queue_id")))
        elif event == "session.close":
            pending.pop(session_id, None)
    ids.discard("")
    return ids, refused


def _same(value: Any, wanted: str) -> bool:
    return _text(value).strip("<>").lower() == wanted


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
