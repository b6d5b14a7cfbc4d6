"""Structured logging: a constant dotted event name plus key=value facts, one line per event.

Text (``key=value``) by default, JSON on request. Loggers are values passed in by app.py; ``bind`` returns a
child carrying extra fields (``room``, ``session_id`` ...). Client-supplied strings go through ``sanitize``.
A log file, when given, gets every line as JSON (what ``postroom trace`` reads back); ``reopen`` starts it
afresh after logrotate moved it (SIGHUP).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

__all__ = ["LEVELS", "Logger", "sanitize"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_MAX_FIELD = 200


def sanitize(value: object, limit: int = _MAX_FIELD) -> str:
    """A client-supplied string made safe for one log line: control characters escaped, length bounded."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


class _Sink:
    """Where lines go; shared by a logger and all its children. Thread-safe."""

    def __init__(self, stream: TextIO, level: int, fmt: Literal["text", "json"], clock: Callable[[], float]):
        self.stream = stream
        self.level = level
        self.format = fmt
        self.clock = clock
        self.lock = threading.Lock()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.file_path: Path | None = None
        self.file: TextIO | None = None

    def open_file(self, path: Path) -> None:
        """Appends JSON lines to ``path`` (made with mode 0600: it names senders and recipients)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        opened = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
        with self.lock:
            old, self.file, self.file_path = self.file, opened, path
        if old is not None:
            old.close()

    def close_file(self) -> None:
        with self.lock:
            old, self.file = self.file, None
        if old is not None:
            old.close()

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        record: dict[str, Any] = {"ts": self.clock(), "level": level, "event": event, **fields}
        for listener in self.listeners:
            listener(record)
        if LEVELS[level] < self.level:
            return
        line = self._format(record)
        json_line = line if self.format == "json" or self.file is None else _json(record)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()
            if self.file is not None:
                self.file.write(json_line + "\n")
                self.file.flush()

    def _format(self, record: dict[str, Any]) -> str:
        if self.format == "json":
            return _json(record)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record["ts"]))
        parts = [stamp, record["level"].upper(), record["event"]]
        for key, value in record.items():
            if key in ("ts", "level", "event"):
                continue
            parts.append(f"{key}={_text_value(value)}")
        return " ".join(parts)


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str, ensure_ascii=False)


def _text_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(char in text for char in ' "='):
        return json.dumps(text, ensure_ascii=False)
    return text


class Logger:
    """A structured logger. ``log.info("message.queued", queue_id=qid, size=n)``."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        level: str = "info",
        fmt: Literal["text", "json"] = "text",
        clock: Callable[[], float] = time.time,
        file: Path | None = None,
        _sink: _Sink | None = None,
        _fields: dict[str, Any] | None = None,
    ) -> None:
        self._sink = _sink or _Sink(stream or sys.stderr, LEVELS[level], fmt, clock)
        self._fields = _fields or {}
        if file is not None:
            self._sink.open_file(file)  # OSError: the caller says which file could not be opened

    def bind(self, **fields: Any) -> Logger:
        return Logger(_sink=self._sink, _fields={**self._fields, **fields})

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Hand every record, whatever its level, to ``listener`` too (metrics, tests, the dashboard)."""
        self._sink.listeners.append(listener)

    def feed(self, record: dict[str, Any]) -> None:
        """A record another process logged (its line was written there): to the listeners only."""
        for listener in self._sink.listeners:
            listener(record)

    def reopen(self) -> None:
        """Opens the log file again by its name (after logrotate moved it away); no file: nothing to do."""
        if self._sink.file_path is not None:
            self._sink.open_file(self._sink.file_path)

    def close(self) -> None:
        """Closes the log file (lines still go to the stream)."""
        self._sink.close_file()

    def set_level(self, level: str) -> None:
        """Lines below ``level`` are left out from now on, by this logger and every one bound from it."""
        self._sink.level = LEVELS[level]

    def is_enabled(self, level: str) -> bool:
        return LEVELS[level] >= self._sink.level

    def debug(self, event: str, **fields: Any) -> None:
        if self._sink.level <= 10 or self._sink.listeners:
            self._sink.emit("debug", event, {**self._fields, **fields})

    def info(self, event: str, **fields: Any) -> None:
        self._sink.emit("info", event, {**self._fields, **fields})

    def warning(self, event: str, **fields: Any) -> None:
        self._sink.emit("warning", event, {**self._fields, **fields})

    def error(self, event: str, **fields: Any) -> None:
        self._sink.emit("error", event, {**self._fields, **fields})

    def failure(self, event: str, exc: BaseException, **fields: Any) -> None:
        """An unexpected error: logged with its traceback on one line (newlines escaped)."""
        trace = "".join(traceback.format_exception(exc)).rstrip()
        self._sink.emit("error", event, {**self._fields, **fields, "error": repr(exc), "traceback": trace})
