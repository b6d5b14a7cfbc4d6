"""Spool files: queue ids, writing one message's bytes to disk, making them durable, and start-up recovery.

Small messages never get a file: their bytes go into the index transaction (see SpoolWriter). Larger ones:
a file while a message arrives (``ready/p<pid>.<n>``, made ahead by prepared.py, or ``incoming/<id>``),
``spool/<id>`` once committed (the rename happens inside the group commit, before the one fsync of
``spool/``). A message for one local mailbox is written in that mailbox's form (local_form.py). A file
in ``spool/`` counts only when the index has its row: the index is written after the file is durable, so
recovery may delete any file the index does not know (its unlink never touches a name it was linked to).
No SQL here (see index.py) and no batching (see commit.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import random
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from postroom.queue.local_form import exact_lf
from postroom.queue.model import QueueError
from postroom.queue.prepared import PreparedFiles, create_spool_file
from postroom.smtp.data import is_crlf_only

__all__ = ["RecoveryReport", "Spool", "SpoolWriter", "link_new", "rename_new", "sync_directory", "sync_file"]

_BUFFER = 64 * 1024
_CHECKED = 4096  # unhinted pieces up to this size are checked for the one-pass Maildir form
_QUEUE_ID = re.compile(r"[0-9a-f]{16}")


def sync_file(fd: int) -> None:
    """fdatasync where the platform has it (data and size, not timestamps), else fsync."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def rename_new(source: Path, target: Path) -> None:
    """Renames ``source`` to ``target`` unless ``target`` exists (FileExistsError): another process on this
    queue_dir can never have its spool file replaced. renameat2(RENAME_NOREPLACE) where the kernel and file
    system have it, else a hard link and an unlink (the same guarantee, one more system call)."""
    if _renameat2 is not None:
        done = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # EINVAL: not on this file system
            raise OSError(code, os.strerror(code), os.fspath(target))
    link_new(source, target)


def link_new(source: Path, target: Path) -> None:
    """rename_new without renameat2: a hard link (FileExistsError if ``target`` exists), then an unlink."""
    os.link(source, target)
    os.unlink(source)


def sync_directory(path: Path) -> None:
    """Makes the directory's entries (a created or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """One incoming message; made by ``Queue.open_spool()``.

    Small messages stay in memory (at most ``inline_max`` bytes) and are committed inside the index
    transaction itself, so one fsync makes a whole batch of them durable. A message that grows past
    ``inline_max`` spills to ``incoming/<queue_id>`` and streams there from then on: memory per session stays
    bounded whatever the message size.

    With ``local_prefix`` (the message has one local mailbox) a spilled file is written in Maildir form:
    that prefix, then the message with CRLF as LF (local_form.py). A bare LF in the message turns the file
    back into wire form (rewritten once), so the form always gives back the bytes received. ``size`` counts
    the message as received either way.

    ``write`` never raises for I/O: a failed write discards the file and remembers the error, and the
    commit then raises QueueError, so a session answers at end of data as RFC 5321 expects.
    """

    def __init__(
        self,
        *,
        queue_id: str,
        incoming_dir: Path,
        inline_max: int,
        prepared: PreparedFiles | None = None,
        local_prefix: bytes = b"",
    ) -> None:
        self.queue_id = queue_id
        self.size = 0
        self._incoming_dir = incoming_dir
        self._inline_max = inline_max
        self._prepared = prepared
        self._prefix = local_prefix  # b"": the file (if any) is in wire form
        self._held_cr = False  # Maildir form: the last write ended in CR, which may start a CRLF
        self._buffer_crlf_only = True  # every CR and LF in the buffer is part of a CRLF
        self._buffer = bytearray()
        self._path: Path | None = None
        self._file: BinaryIO | None = None
        self._error: OSError | None = None
        self._sealed = False  # handed to the commit: no more writes
        self._rewrites = 0  # times prepend() copied a spilled file into a new one

    @property
    def inline_body(self) -> bytes | None:
        """The whole message when it never left memory, else None (it is in a spool file)."""
        if self._path is not None or self._error is not None:
            return None
        return bytes(self._buffer)

    def write(self, data: bytes, *, crlf_only: bool = False) -> None:
        """Appends message octets. ``crlf_only`` (every CR and LF in ``data`` is part of a CRLF, as the DATA
        reader knows) lets the Maildir form drop the CRs in one pass instead of replacing and counting."""
        if self._sealed:
            raise RuntimeError(f"spool {self.queue_id} is being committed or was aborted")
        if self._error is not None:
            return  # failed earlier; the commit will say so
        self.size += len(data)
        if self._file is None:
            self._buffer += data
            # in Maildir form a small piece without the hint (our Received header, say) is checked here
            self._buffer_crlf_only = self._buffer_crlf_only and bool(self._prefix) and (
                crlf_only or (len(data) <= _CHECKED and is_crlf_only(data))
            )
            if len(self._buffer) > self._inline_max:
                self._spill()
            return
        try:
            self._put(data, crlf_only=crlf_only)
        except OSError as exc:
            self._fail(exc)

    @property
    def local_form(self) -> bool:
        """True while the spilled file is in Maildir form (see local_form.py)."""
        return bool(self._prefix) and self._path is not None

    def _spill(self) -> None:
        taken = self._prepared.take() if self._prepared is not None else None
        try:
            if taken is None:
                path = self._incoming_dir / self.queue_id
                self._file, self._path = create_spool_file(path), path
            else:
                self._path, self._file = taken
            if self._prefix:
                self._file.write(self._prefix)
            self._put(bytes(self._buffer), crlf_only=self._buffer_crlf_only)
        except OSError as exc:
            self._fail(exc)
        self._buffer = bytearray()

    def _put(self, data: bytes, *, crlf_only: bool = False) -> None:
        """Writes message bytes to the file, in its form."""
        assert self._file is not None
        if not self._prefix:
            self._file.write(data)
            return
        if crlf_only and not self._held_cr:  # no bare CR or LF, and none to pair: drop the CRs, one pass
            self._file.write(data.translate(None, b"\r"))
            return
        if self._held_cr:
            data, self._held_cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._held_cr = data[:-1], True
        out = exact_lf(data)
        if out is None:  # a bare LF: the Maildir form could not give this message back
            if self._held_cr:
                data, self._held_cr = data + b"\r", False
            self._to_wire_form()
            if self._error is None and self._file is not None:
                self._file.write(data)
            return
        self._file.write(out)

    def _release_cr(self) -> None:
        """The message is complete: a CR held back for a following LF is a bare CR, the same in both forms."""
        if self._file is not None:
            self._release_cr_into(self._file)

    def _release_cr_into(self, file: BinaryIO) -> None:
        if self._held_cr:
            self._held_cr = False
            file.write(b"\r")

    def _to_wire_form(self) -> None:
        """Rewrites the Maildir-form file as received (each LF was a CRLF); writing goes on in wire form."""
        self._release_cr()
        skip, self._prefix = len(self._prefix), b""
        self._rewrite(b"", skip=skip, transform=lambda block: block.replace(b"\n", b"\r\n"))

    def _fail(self, exc: OSError) -> None:
        self._error = exc
        self._discard()

    def head(self, limit: int) -> bytes:
        """The first ``limit`` octets written so far (checks at end of data read the message back here)."""
        if self._error is not None:
            return b""
        if self._file is None or self._path is None:
            return bytes(self._buffer[:limit])
        skip = len(self._prefix)
        try:
            self._file.flush()
            with open(self._path, "rb") as source:
                source.seek(skip)
                data = source.read(limit)
        except OSError as exc:
            self._fail(exc)
            return b""
        return data.replace(b"\n", b"\r\n")[:limit] if skip else data

    def prepend(self, data: bytes) -> None:
        """Puts ``data`` (whole header lines) on top of the message, once the body is in.

        In memory for an inline body. A spilled body is copied behind ``data`` into a new incoming file
        that takes the old one's place; the commit then makes that file durable just as it would have
        the old one (fdatasync, rename into ``spool/``, fsync of ``spool/``), and start-up recovery
        removes either if we crash before.
        """
        if self._sealed:
            raise RuntimeError(f"spool {self.queue_id} is being committed or was aborted")
        if self._error is not None or not data:
            return
        self.size += len(data)
        if self._file is None or self._path is None:
            self._buffer[:0] = data
            return
        self._release_cr()
        if self._prefix:
            lf = exact_lf(data) if not data.endswith(b"\r") else None
            if lf is not None:
                self._rewrite(self._prefix + lf, skip=len(self._prefix))
                return
            self._to_wire_form()
        self._rewrite(data, skip=0)

    def _rewrite(self, head: bytes, *, skip: int, transform: Callable[[bytes], bytes] | None = None) -> None:
        """Replaces the file by ``head`` + its contents from offset ``skip`` (each block ``transform``ed)."""
        if self._file is None or self._path is None:
            return
        old_file, old_path = self._file, self._path
        new_path = self._incoming_dir / f"{self.queue_id}.{self._rewrites + 1}"
        try:
            old_file.flush()
            new_file = create_spool_file(new_path)
        except OSError as exc:
            self._fail(exc)
            return
        self._rewrites += 1
        self._file, self._path = new_file, new_path
        try:
            new_file.write(head)
            with open(old_path, "rb") as source:
                source.seek(skip)
                if transform is None:
                    shutil.copyfileobj(source, new_file, _BUFFER)
                else:
                    while block := source.read(_BUFFER):
                        new_file.write(transform(block))
        except OSError as exc:
            self._fail(exc)  # discards the new file; the old one goes below
        with contextlib.suppress(OSError):
            old_file.close()
        old_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Discards the message (closes and unlinks the file). Safe to call twice or after a failed commit."""
        self._sealed = True
        self._discard()

    # --- used by the commit worker thread ------------------------------------------------------------

    def seal(self) -> None:
        """No more writes: the message is handed to the commit."""
        if self._sealed:
            raise RuntimeError(f"spool {self.queue_id} was already committed or aborted")
        self._sealed = True
        if self._error is not None:
            raise QueueError(f"writing spool file {self.queue_id} failed: {self._error}")

    @property
    def spilled(self) -> bool:
        return self._path is not None

    def make_durable(self, final_path: Path) -> None:
        """Flushes, fdatasyncs, closes, renames into ``spool/``. The caller fsyncs ``spool/`` afterwards."""
        if self._error is not None or self._file is None or self._path is None:
            raise QueueError(f"writing spool file {self.queue_id} failed: {self._error}")
        file = self._file
        try:
            self._release_cr()
            file.flush()
            sync_file(file.fileno())
        finally:
            self._file = None
            file.close()
        rename_new(self._path, final_path)
        self._path = final_path

    def close_file(self) -> Path:
        """Flushes and closes the spilled file, not synced (for the commit process: it syncs and renames
        the file by its path, see committer.py); returns that path."""
        if self._error is not None or self._file is None or self._path is None:
            raise QueueError(f"writing spool file {self.queue_id} failed: {self._error}")
        file, self._file = self._file, None
        try:
            self._release_cr_into(file)
            file.flush()
        finally:
            file.close()
        return self._path

    def moved_to(self, path: Path) -> None:
        """The commit process renamed the file to ``path``."""
        self._path = path

    def remove(self) -> None:
        """Deletes the file wherever it is now (after a failed commit)."""
        self._discard()

    def _discard(self) -> None:
        self._buffer = bytearray()
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # close flushes: on a full disk it fails; the file goes anyway
                file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What start-up recovery removed: spool files the index never knew, leftover incoming files; and the
    spooled messages of the index whose file is missing (their delivery fails: nothing left to deliver)."""

    removed_spool: int
    removed_incoming: int
    missing_spool: tuple[str, ...] = ()


class Spool:
    """The spool directories of one queue_dir: ids, writers, paths, the owner lock and recovery."""

    def __init__(self, *, queue_dir: Path, clock: Callable[[], float], id_slot: int = 0) -> None:
        """``id_slot`` (1..15) is this process's digit in the queue ids: the server's workers each have their
        own, so two of them never make the same id; 0 (other processes, e.g. sendmail) draws it at random."""
        if not 0 <= id_slot <= 15:
            raise ValueError(f"id_slot {id_slot} is out of range 0..15")
        self._id_slot = id_slot
        self.incoming_dir = queue_dir / "incoming"
        self.ready_dir = queue_dir / "ready"
        self.prepared = PreparedFiles(self.ready_dir)  # started by the Queue once recovery is done
        self.spool_dir = queue_dir / "spool"
        self._lock_path = queue_dir / "lock"
        self._lock_fd: int | None = None
        self._clock = clock
        self._last_micros = 0
        self._id_lock = threading.Lock()
        # Seeded once from the OS: the random digits only keep two processes on one queue_dir apart, and a
        # getrandom() system call per message costs more than everything else in new_queue_id.
        self._random = random.Random()  # noqa: S311 - not a secret

    def create(self) -> None:
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    def new_queue_id(self) -> str:
        """16 hex digits: microseconds since the epoch (13, strictly increasing here), the process's id slot
        (random without one) and 2 random ones. A clash between processes without a slot is caught: the
        commit refuses to replace a spool file (rename_new) or an index row (primary key), and says 451."""
        with self._id_lock:
            micros = max(int(self._clock() * 1_000_000), self._last_micros + 1)
            self._last_micros = micros
            if self._id_slot:
                salt = self._id_slot << 8 | self._random.getrandbits(8)
            else:
                salt = self._random.getrandbits(12)
        return f"{micros:013x}{salt:03x}"

    def open_writer(self, *, inline_max: int, local_prefix: bytes = b"") -> SpoolWriter:
        """A writer under a fresh queue id (its file, if it needs one, is made with O_EXCL)."""
        return SpoolWriter(
            queue_id=self.new_queue_id(),
            incoming_dir=self.incoming_dir,
            inline_max=inline_max,
            prepared=self.prepared,
            local_prefix=local_prefix,
        )

    def path(self, queue_id: str) -> Path:
        if not _QUEUE_ID.fullmatch(queue_id):
            raise ValueError(f"not a queue id: {queue_id!r}")
        return self.spool_dir / queue_id

    def sync(self) -> None:
        sync_directory(self.spool_dir)

    def acquire(self) -> bool:
        """Locks the queue dir; True (and an exclusive lock) when no other process is running on it.

        Call ``share()`` after recovery: running processes hold a shared lock, so a process that starts
        while others run skips recovery and waits here until the exclusive holder has finished its own.
        """
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return False
        return True

    def share(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(
        self, known_ids: set[str], *, sole_owner: bool, spooled_ids: set[str] | None = None
    ) -> RecoveryReport:
        """Removes spool files without an index row (never acknowledged, or their removal was committed)
        and leftover incoming files; reports the ``spooled_ids`` (index rows with a spool file) that have
        no file. Files whose rows exist are kept.

        Only when ``sole_owner``: another running process may be between its rename and its index commit.
        """
        if not sole_owner:
            return RecoveryReport(0, 0)
        removed_spool = 0
        present: set[str] = set()
        for entry in os.scandir(self.spool_dir):
            if entry.name not in known_ids:
                os.unlink(entry.path)
                removed_spool += 1
            else:
                present.add(entry.name)
        removed_incoming = 0
        for folder in (self.incoming_dir, self.ready_dir):
            for entry in os.scandir(folder):
                os.unlink(entry.path)
                removed_incoming += 1
        if removed_spool:
            self.sync()
        missing = tuple(sorted((spooled_ids or set()) - present))
        return RecoveryReport(removed_spool, removed_incoming, missing)
