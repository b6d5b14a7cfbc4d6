"""Spool files created ahead of need by a helper thread, so the event loop never waits to create one.

Creating a file is a journal transaction: while the commit worker and the delivery threads fsync, an
``open(O_CREAT)`` on the event loop can wait milliseconds, and every session waits with it. A thread keeps
empty files ready in ``ready/`` (``p<pid>.<n>``, mode 0600); a SpoolWriter that spills takes one
without blocking, or creates its own when none is ready. The stock grows with demand (one more file for
each time none was ready, up to ``stock``), so a queue that never spills keeps none. Their names do not
matter: the commit renames a file to ``spool/<queue id>``, and start-up recovery removes whatever is left
in ``ready/``. No message bytes here (spool.py) and no durability (commit.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
from pathlib import Path
from typing import BinaryIO

__all__ = ["PreparedFiles", "create_spool_file"]

_BUFFER = 64 * 1024  # 128 KiB (no write() on the event loop for a 100 KiB message) measured no better
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def create_spool_file(path: Path) -> BinaryIO:
    """A new, empty file (O_EXCL, mode 0600: it may become a mailbox's file by a hard link), buffered."""
    fd = os.open(path, _FLAGS, 0o600)
    return open(fd, "wb", buffering=_BUFFER)


class PreparedFiles:
    """Up to ``stock`` empty files kept ready in ``folder`` by a thread, from ``start`` to ``stop``."""

    def __init__(self, folder: Path, *, stock: int = 32) -> None:
        self._dir = folder
        self._stock = max(1, stock)
        self._ready: queue.SimpleQueue[tuple[Path, BinaryIO]] = queue.SimpleQueue()
        self._wanted = threading.Semaphore(0)  # one release per file to make
        self._circulating = 0  # files the thread was asked for so far (taken ones are replaced)
        self._names = itertools.count()
        self._running = False
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._stopped.clear()
        self._thread = threading.Thread(target=self._run, name="postroom-prepare", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Path, BinaryIO] | None:
        """A ready file (path, open for writing), or None when the stock is empty or stopped. Never blocks."""
        if not self._running:
            return None
        try:
            taken = self._ready.get_nowait()
        except queue.Empty:
            if self._circulating < self._stock:
                self._circulating += 1
                self._wanted.release()
            return None
        self._wanted.release()
        return taken

    def stop(self) -> None:
        """Ends the thread, then closes and removes the files nobody took."""
        self._running = False
        self._stopped.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wanted.release()
            thread.join()
        while True:
            try:
                path, file = self._ready.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(OSError):
                file.close()
                path.unlink()

    def _run(self) -> None:
        pid = os.getpid()
        while True:
            self._wanted.acquire()
            if not self._running:
                return
            path = self._dir / f"p{pid}.{next(self._names)}"
            try:
                self._ready.put((path, create_spool_file(path)))
            except OSError:  # full disk, say: writers create their own files (and say why); try again later
                self._wanted.release()
                self._stopped.wait(1.0)
