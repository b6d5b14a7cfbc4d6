"""Finds processes by parent and command line in /proc (Linux), for tests that check what a server runs."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["alive", "children", "descendants"]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:  # gone meanwhile
        return b""


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm) state": the parent's pid


def children(parent: int, command: str) -> list[int]:
    """Live (not zombie: their command line is empty) children of ``parent`` whose command line holds
    ``command``, e.g. ``postroom.queue.committer``."""
    found = []
    for entry in os.scandir("/proc"):
        pid = int(entry.name) if entry.name.isdigit() else None
        if pid is not None and _parent(pid) == parent and command.encode() in _cmdline(pid):
            found.append(pid)
    return sorted(found)


def descendants(root: int, command: str) -> list[int]:
    """Like ``children``, at any depth below ``root`` (a worker's commit process under the supervisor)."""
    parents = {pid: _parent(pid) for pid in (int(e.name) for e in os.scandir("/proc") if e.name.isdigit())}
    found, below = [], {root}
    for _ in range(10):  # a few levels at most: supervisor, worker, its children
        level = {pid for pid, parent in parents.items() if parent in below} - below
        if not level:
            break
        found += [pid for pid in level if command.encode() in _cmdline(pid)]
        below |= level
    return sorted(found)


def alive(pid: int, command: str) -> bool:
    """True while ``pid`` is a live process (not a zombie) whose command line holds ``command``: a reused
    pid of another program does not count."""
    return command.encode() in _cmdline(pid)
