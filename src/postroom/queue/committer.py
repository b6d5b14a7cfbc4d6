"""The commit process (``[queue] commit_process``): makes batches of spool files and index rows durable for
one server process, in a process of its own. Run as
``python -m postroom.queue.committer FD DATABASE SPOOL_DIR MAX_BATCH`` (at most MAX_BATCH messages a round).

Why a process: measured under load, the same commit work that takes 3 ms in a process alone took 12 ms
in the server's commit threads (commit.py), which share the GIL with the event loop (docs/performance.md).

Frames (frames.py) on the socket pair FD, both ways. A request is ``(batch, [(path, NewMessage), ...])``:
a spooled message's file, written and closed but not synced, or None for an inline body. The answer is
``(batch, [error text or None, ...], round, durable)``: the round that took the batch, and how many
messages that round made durable (the server's statistics).

Two stages overlap. A reader thread takes requests as they come and starts each file's fdatasync at once,
in a pool of threads; the main thread takes everything that arrived while it worked (the group commit):
it waits for those files' syncs, renames them to ``spool/<queue id>`` (never over another file), fsyncs
``spool/`` once, then writes all rows in one transaction (``synchronous=FULL``). So a message's file is
being synced while the previous round writes its rows. A row is written only after its file is durable;
on any failure the message's file is removed and its answer says why. EOF on the socket ends the process.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import signal
import socket
import sqlite3
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from postroom.queue.frames import decode, encode, split
from postroom.queue.index import Index, NewMessage
from postroom.queue.spool import rename_new, sync_directory, sync_file
from postroom.store.sqlite import open_database

__all__ = ["Committer", "main"]

_SYNC_THREADS = 8

Item = tuple[str | None, NewMessage]
Synced = OSError | None  # a file's fdatasync: None when it worked (or there was no file)


@dataclass(frozen=True, slots=True)
class _Request:
    batch: int
    items: list[Item]
    syncs: list[Future[Synced] | None]  # one per item: its file's fdatasync, started; None: inline body


class _Receiver:
    """A thread that reads requests off the socket and starts their files' syncs as soon as they arrive."""

    def __init__(self, sock: socket.socket, committer: Committer) -> None:
        self._sock = sock
        self._committer = committer
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()  # None: the socket closed
        self._carry: _Request | None = None  # taken off the queue but over a round's limit
        self._thread = threading.Thread(target=self._run, name="postroom-commit-read", daemon=True)
        self._thread.start()

    def take(self, limit: int) -> tuple[list[_Request], bool]:
        """What was received so far, up to ``limit`` messages (at least one request), waiting for the
        first; and whether the socket has closed."""
        first, self._carry = self._carry or self._requests.get(), None
        if first is None:
            return [], True
        taken, count = [first], len(first.items)
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return taken, False
            if request is None:
                return taken, True
            if count + len(request.items) > limit:
                self._carry = request  # first in the next round
                return taken, False
            taken.append(request)
            count += len(request.items)

    def _run(self) -> None:
        buffer = bytearray()
        try:
            while data := self._sock.recv(1 << 20):
                buffer += data
                for frame in split(buffer):
                    batch, items = decode(frame)
                    syncs = [self._committer.start_sync(path) for path, _ in items]
                    self._requests.put(_Request(batch, items, syncs))
        except OSError:
            pass  # the server went away (reset): as good as EOF
        finally:
            self._requests.put(None)


class Committer:
    """The work of one round: files durable, then rows; the answer for each message."""

    def __init__(self, *, conn: sqlite3.Connection, spool_dir: Path) -> None:
        self._index = Index(conn)
        self._spool_dir = spool_dir
        self._pool = ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="postroom-commit-sync")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def start_sync(self, path: str | None) -> Future[Synced] | None:
        """Starts the fdatasync of the file at ``path`` in the pool (None for an inline body: no file)."""
        return None if path is None else self._pool.submit(_sync_path, path)

    def commit(self, items: Sequence[Item], synced: Sequence[Synced] | None = None) -> list[str | None]:
        """One round; ``synced``, one per item, when the files' syncs were done already (else done here)."""
        if synced is None:
            started = [self.start_sync(path) for path, _ in items]
            synced = [None if sync is None else sync.result() for sync in started]
        errors: list[str | None] = [None] * len(items)
        moved: dict[int, Path] = {}
        spooled = [i for i, (path, _) in enumerate(items) if path is not None]
        for i, error in ((i, synced[i]) for i in spooled):
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

    @staticmethod
    def _fail(moved: dict[int, Path], errors: list[str | None], reason: str) -> None:
        for i, path in moved.items():
            errors[i] = reason
            _unlink(str(path))


def _sync_path(path: str) -> Synced:
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
    if len(argv) != 5 or not argv[4].isdigit() or int(argv[4]) < 1:
        print("usage: python -m postroom.queue.committer FD DATABASE SPOOL_DIR MAX_BATCH", file=sys.stderr)
        return 2
    max_batch = int(argv[4])
    # The server ends this process by closing the socket, after its last commit; a signal to the whole
    # process group (Ctrl-C, systemd's stop) must not cut a commit short.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    conn = open_database(Path(argv[2]))
    committer = Committer(conn=conn, spool_dir=Path(argv[3]))
    receiver = _Receiver(sock, committer)
    try:
        for number in itertools.count(1):
            requests, closed = receiver.take(max_batch)
            if requests:
                _answer(sock, number, requests, committer)
            if closed:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away: nothing is waiting for these answers
    finally:
        committer.close()
        conn.close()
        sock.close()
    return 0


def _answer(sock: socket.socket, number: int, requests: list[_Request], committer: Committer) -> None:
    """Round ``number``: commits every request taken, then answers each by its batch number."""
    items = [item for request in requests for item in request.items]
    synced = [None if sync is None else sync.result() for request in requests for sync in request.syncs]
    errors = committer.commit(items, synced)
    durable = errors.count(None)
    answers, start = [], 0
    for request in requests:
        end = start + len(request.items)
        answers.append(encode((request.batch, errors[start:end], number, durable)))
        start = end
    sock.sendall(b"".join(answers))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
