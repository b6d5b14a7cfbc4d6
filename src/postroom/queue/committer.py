"""The commit process (``[queue] commit_process``): makes batches of spool files and index rows durable for
one server process, in a process of its own. Run as ``python -m postroom.queue.committer FD DATABASE SPOOL``.

Why a process: measured under load, the same commit work that takes 3 ms in a process alone took 12 ms
in the server's commit threads (commit.py), which share the GIL with the event loop (docs/performance.md).

Frames (frames.py) on the socket pair FD, both ways. A request is ``(batch, [(path, NewMessage), ...])``:
a spooled message's file, written and closed but not synced, or None for an inline body. The answer is
``(batch, [error text or None, ...])``. Everything waiting is taken at once: files fdatasynced (in
parallel when many), renamed to ``spool/<queue id>`` (never over another file), ``spool/`` fsynced, then
all rows in one transaction (``synchronous=FULL``). A row is written only after its file is durable; on
any failure the message's file is removed and its answer says why. EOF on the socket ends the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from postroom.queue.frames import decode, encode, split
from postroom.queue.index import Index, NewMessage
from postroom.queue.spool import rename_new, sync_directory, sync_file
from postroom.store.sqlite import open_database

__all__ = ["Committer", "main"]

_PARALLEL_FROM = 4
_SYNC_THREADS = 4

Item = tuple[str | None, NewMessage]


class _Frames:
    """Reads whole frames from the socket: blocks for the first, then takes what is there already."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.closed = False

    def read(self) -> list[tuple[int, list[Item]]]:
        frames = self._parse()
        while not frames and not self.closed:
            self._receive(block=True)
            frames = self._parse()
        if not self.closed:
            self._receive(block=False)
            frames += self._parse()
        return frames

    def _receive(self, *, block: bool) -> None:
        self._sock.setblocking(block)
        try:
            while True:
                data = self._sock.recv(1 << 20)
                if not data:
                    self.closed = True
                    return
                self._buffer += data
                if block:
                    return
        except BlockingIOError:
            return

    def _parse(self) -> list[tuple[int, list[Item]]]:
        return [decode(frame) for frame in split(self._buffer)]


class Committer:
    """The work of one round: files durable, then rows; the answer for each message."""

    def __init__(self, *, conn: sqlite3.Connection, spool_dir: Path) -> None:
        self._index = Index(conn)
        self._spool_dir = spool_dir
        self._pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="postroom-commit-sync")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def commit(self, items: Sequence[Item]) -> list[str | None]:
        errors: list[str | None] = [None] * len(items)
        moved: dict[int, Path] = {}
        spooled = [i for i, (path, _) in enumerate(items) if path is not None]
        synced = self._sync([items[i][0] for i in spooled])  # type: ignore[misc]
        for i, error in zip(spooled, synced, strict=True):
            source, message = items[i]
            assert source is not None
            target = self._spool_dir / message.queue_id
            try:
                if error is not None:
                    raise error
                rename_new(Path(source), target)
                moved[i] = target
            except OSError as exc:
                errors[i] = f"spool file: {exc}"
                _unlink(source)
        if moved:
            try:
                sync_directory(self._spool_dir)
            except OSError as exc:
                self._fail(moved, errors, f"spool folder: {exc}")
        durable = [i for i in range(len(items)) if errors[i] is None]
        if durable:
            try:
                self._index.insert([items[i][1] for i in durable])
            except (OSError, sqlite3.Error) as exc:
                self._fail({i: moved[i] for i in durable if i in moved}, errors, f"index: {exc}")
                for i in durable:
                    errors[i] = errors[i] or f"index: {exc}"
        return errors

    def _sync(self, paths: Sequence[str]) -> list[OSError | None]:
        if len(paths) >= _PARALLEL_FROM:
            return list(self._pool.map(_sync_path, paths))
        return [_sync_path(path) for path in paths]

    @staticmethod
    def _fail(moved: dict[int, Path], errors: list[str | None], reason: str) -> None:
        for i, path in moved.items():
            errors[i] = reason
            _unlink(str(path))


def _sync_path(path: str) -> OSError | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sync_file(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return exc
    return None


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):  # gone already, or start-up recovery removes it (a file without a row)
        os.unlink(path)


def main(argv: Sequence[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m postroom.queue.committer FD DATABASE SPOOL_DIR", file=sys.stderr)
        return 2
    # The server ends this process by closing the socket, after its last commit; a signal to the whole
    # process group (Ctrl-C, systemd's stop) must not cut a commit short.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    conn = open_database(Path(argv[2]))
    committer = Committer(conn=conn, spool_dir=Path(argv[3]))
    frames = _Frames(sock)
    try:
        while not frames.closed:
            batches = frames.read()
            if not batches:
                continue
            errors = committer.commit([item for _, items in batches for item in items])
            answers, start = [], 0
            for batch, items in batches:
                answers.append(encode((batch, errors[start : start + len(items)])))
                start += len(items)
            sock.setblocking(True)
            sock.sendall(b"".join(answers))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away: nothing is waiting for these answers
    finally:
        committer.close()
        conn.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
