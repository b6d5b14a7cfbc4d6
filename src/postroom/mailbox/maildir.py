"""Maildir (https://cr.yp.to/proto/maildir.html): deliver (tmp/ -> fsync -> new/), list, read, set flags.

Delivery streams in 128 KiB blocks and turns CRLF into LF, the on-disk form mutt and Dovecot expect. A
mailbox lives at ``<root>/<domain>/<local-part>/``; ``folder_name`` encodes each part so that no address
("..", "a/b", NUL) can leave the tree. It does not decide where mail goes (delivery does) nor lock anything:
Maildir needs no locks, every file is written once under a unique name and renamed.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["Maildir", "MaildirMessage", "Maildirs", "folder_name"]

_BLOCK = 128 * 1024
_FLAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_INFO = ":2,"


def folder_name(part: str) -> str:
    """One path component for a domain or local part: "%", "/" and NUL are %-escaped, a leading "." too.

    The mapping is one-to-one (every "%" is escaped) and never yields "", ".", ".." or a hidden name.
    """
    if not part:
        raise ValueError("an empty local part or domain has no mailbox")
    text = part.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if text.startswith("."):
        text = "%2E" + text[1:]
    return text


def _safe_hostname(hostname: str) -> str:
    # Maildir spec: "/" and ":" in the host name are written as \057 and \072
    return hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"


def _sync_file(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _CrlfToLf:
    """Streaming CRLF -> LF; a CR at the end of a block waits for the next block's first byte."""

    def __init__(self) -> None:
        self._held_cr = False

    def convert(self, block: bytes) -> bytes:
        if self._held_cr:
            block = b"\r" + block
            self._held_cr = False
        if block.endswith(b"\r"):
            block = block[:-1]
            self._held_cr = True
        return block.replace(b"\r\n", b"\n")

    def finish(self) -> bytes:
        return b"\r" if self._held_cr else b""


@dataclass(frozen=True, slots=True)
class MaildirMessage:
    """One message: its unique name (stable when flags change), its flags ("" while new), whether new."""

    name: str
    flags: str
    is_new: bool


class Maildir:
    """One Maildir folder (cur/ new/ tmp/)."""

    def __init__(
        self,
        *,
        path: Path,
        hostname: str,
        clock: Callable[[], float] = time.time,
        counter: Iterator[int] | None = None,
    ) -> None:
        self.path = path
        self._hostname = _safe_hostname(hostname)
        self._clock = clock
        self._counter = counter if counter is not None else itertools.count()

    def create(self) -> None:
        for sub in ("cur", "new", "tmp"):
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def deliver(
        self,
        source: BinaryIO | Path,
        *,
        prefix_headers: bytes = b"",
        sync_new: bool = True,
        source_is_lf: bool = False,
    ) -> str:
        """Writes ``prefix_headers`` + the message to tmp/, fsyncs, renames into new/, fsyncs new/.

        Returns the file name in new/. When this returns the message is on disk; on any error the tmp
        file is gone and the OSError propagates. ``sync_new=False`` leaves the fsync of new/ to the caller
        (``sync_new_folder``), so that a batch of deliveries into one Maildir shares it. ``source_is_lf``:
        the message is already in the on-disk form (LF line ends) and is copied as it is.
        """
        unique = self._unique_name()
        tmp = self.path / "tmp" / unique
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:  # folders missing (first mail, or removed by hand): make them, once
            self.create()
            fd = os.open(tmp, flags, 0o600)
        try:
            with open(fd, "wb", buffering=_BLOCK) as out:
                size = self._copy(source, out, prefix_headers, convert=not source_is_lf)
                out.flush()
                _sync_file(out.fileno())
            name = f"{unique},S={size}"
            os.rename(tmp, self.path / "new" / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if sync_new:
            self.sync_new_folder()
        return name

    def link(self, source: Path, *, size: int, sync_new: bool = True) -> str:
        """Delivers a file that is already in final form and durable by a hard link into new/: no copy.

        ``size`` is the file's size (for the name, as ``deliver`` gives it). The message counts as delivered
        once new/ is fsynced (here, or by the caller with ``sync_new=False``). Raises OSError when the file
        cannot be linked (another file system: EXDEV; too many links): the caller copies instead.
        """
        name = f"{self._unique_name()},S={size}"
        target = self.path / "new" / name
        try:
            os.link(source, target)
        except FileNotFoundError:
            if not source.exists():
                raise
            self.create()  # folders missing (removed by hand): make them, once
            os.link(source, target)
        if sync_new:
            self.sync_new_folder()
        return name

    def sync_new_folder(self) -> None:
        """Makes the renames into new/ durable."""
        _sync_directory(self.path / "new")

    def list(self) -> builtins.list[MaildirMessage]:
        """Messages in new/ and cur/, sorted by name (roughly arrival order)."""
        found: builtins.list[MaildirMessage] = []
        for sub, is_new in (("new", True), ("cur", False)):
            try:
                entries = os.listdir(self.path / sub)
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.startswith("."):
                    continue
                name, _, flags = entry.partition(_INFO)
                found.append(MaildirMessage(name=name, flags=flags, is_new=is_new))
        return sorted(found, key=lambda message: message.name)

    def read(self, name: str) -> bytes:
        return self._find(name).read_bytes()

    def set_flags(self, name: str, flags: str) -> None:
        """Moves the message to cur/ with ``:2,FLAGS`` (letters, kept once each, in ASCII order)."""
        if not set(flags) <= _FLAG_CHARS:
            raise ValueError(f"maildir flags are letters: {flags!r}")
        current = self._find(name)
        os.rename(current, self.path / "cur" / f"{name}{_INFO}{''.join(sorted(set(flags)))}")

    def _find(self, name: str) -> Path:
        if not name or "/" in name or name.startswith(".") or ":" in name:
            raise ValueError(f"not a maildir message name: {name!r}")
        candidate = self.path / "new" / name
        if candidate.exists():
            return candidate
        with os.scandir(self.path / "cur") as entries:
            for entry in entries:
                if entry.name == name or entry.name.startswith(name + ":"):
                    return Path(entry.path)
        raise FileNotFoundError(f"no message {name!r} in {self.path}")

    def _unique_name(self) -> str:
        now = self._clock()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        # Maildir's own recipe: time, microseconds, pid and a per-process delivery counter (Q) make the name
        # unique on this host; O_EXCL on tmp/ catches the impossible rest.
        return f"{seconds}.M{micros}P{os.getpid()}Q{next(self._counter)}.{self._hostname}"

    @staticmethod
    def _copy(source: BinaryIO | Path, out: BinaryIO, prefix: bytes, *, convert: bool = True) -> int:
        converter = _CrlfToLf()
        size = 0
        chunk = converter.convert(prefix)
        out.write(chunk)
        size += len(chunk)
        with source.open("rb") if isinstance(source, Path) else contextlib.nullcontext(source) as stream:
            while block := stream.read(_BLOCK):
                chunk = converter.convert(block) if convert else block
                out.write(chunk)
                size += len(chunk)
        tail = converter.finish()
        out.write(tail)
        return size + len(tail)


class Maildirs:
    """All local mailboxes under ``root``: ``<root>/<domain>/<local-part>/``."""

    def __init__(
        self, root: Path, *, clock: Callable[[], float] = time.time, hostname: str | None = None
    ) -> None:
        self.root = root
        self._clock = clock
        self._hostname = hostname if hostname is not None else socket.gethostname()
        self._created: set[Path] = set()  # folders known to exist: no mkdir calls on every delivery
        self._counter = itertools.count()  # shared by all its Maildirs: names stay unique per process

    def path_for(self, address: str) -> Path:
        local, at, domain = address.rpartition("@")
        if not at:
            raise ValueError(f"a mailbox address needs a domain: {address!r}")
        return self.root / folder_name(domain.lower()) / folder_name(local)

    def for_address(self, address: str, *, folder: str | None = None) -> Maildir:
        """The mailbox of "user@domain", or its Maildir++ sub-folder ``.<folder>`` (e.g. ".Junk", as
        Dovecot and Courier name them), its folders created if missing."""
        path = self.path_for(address)
        if folder is not None:
            if path not in self._created:
                self.for_address(address)  # the mailbox itself first: readers expect it
            path = path / f".{folder_name(folder)}"
        maildir = Maildir(path=path, hostname=self._hostname, clock=self._clock, counter=self._counter)
        if path not in self._created:  # removed by hand later? deliver() makes the folders again
            maildir.create()
            if folder is not None:
                (path / "maildirfolder").touch(mode=0o600)  # Maildir++: marks a sub-folder
            self._created.add(path)
        return maildir
