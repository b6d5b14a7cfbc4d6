"""The commit process's work (committer.py): files durable and renamed, then rows; one answer per message.

Directly, on real folders and a real database; and as ``python -m postroom.queue.committer`` on a socket
pair, the way the server runs it.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.queue.committer import Committer, Item
from postroom.queue.frames import decode, encode, split
from postroom.queue.index import Index, NewMessage
from postroom.store.sqlite import open_database

from .conftest import envelope

_ANSWER_WAIT = 30.0  # seconds a test waits for the process's answer at most


class Folders:
    """A queue's incoming/ and spool/ folders and its database, as the committer sees them."""

    def __init__(self, root: Path) -> None:
        self.incoming = root / "incoming"
        self.spool = root / "spool"
        self.database = root / "postroom.db"
        self.incoming.mkdir()
        self.spool.mkdir()
        self._serial = 0

    def queue_id(self) -> str:
        self._serial += 1
        return f"{self._serial:016x}"

    def spooled(self, data: bytes, queue_id: str | None = None) -> Item:
        """A message whose body was written to an incoming file (closed, not synced)."""
        queue_id = queue_id or self.queue_id()
        path = self.incoming / queue_id
        path.write_bytes(data)
        return str(path), NewMessage(queue_id, envelope(), len(data), 1.0)

    def inline(self, data: bytes, queue_id: str | None = None) -> Item:
        queue_id = queue_id or self.queue_id()
        return None, NewMessage(queue_id, envelope(), len(data), 1.0, body=data)

    def known(self) -> set[str]:
        conn = open_database(self.database, readonly=True)
        try:
            return Index(conn).known_ids()
        finally:
            conn.close()


@pytest.fixture
def folders(tmp_path: Path) -> Folders:
    return Folders(tmp_path)


@pytest.fixture
def committer(folders: Folders) -> Iterator[Committer]:
    conn = open_database(folders.database)
    done = Committer(conn=conn, spool_dir=folders.spool)
    try:
        yield done
    finally:
        done.close()
        conn.close()


def _id(item: Item) -> str:
    return item[1].queue_id


# --- the work of one round ---------------------------------------------------------------------------


@pytest.mark.parametrize("spooled", [1, 6], ids=["one-file", "files-synced-in-parallel"])
def test_files_are_renamed_into_the_spool_and_every_row_is_written(
    committer: Committer, folders: Folders, spooled: int
) -> None:
    files = [folders.spooled(b"message %d\r\n" % n) for n in range(spooled)]
    inline = folders.inline(b"small\r\n")
    items = [*files, inline]
    assert committer.commit(items) == [None] * len(items)
    for n, item in enumerate(files):
        assert (folders.spool / _id(item)).read_bytes() == b"message %d\r\n" % n
        assert not Path(str(item[0])).exists()
    assert not (folders.spool / _id(inline)).exists()  # an inline body has no file
    assert folders.known() == {_id(item) for item in items}
    assert list(folders.incoming.iterdir()) == []


def test_a_target_already_in_the_spool_fails_that_message_only(
    committer: Committer, folders: Folders
) -> None:
    first, clash, last = (folders.spooled(b"mine %d\r\n" % n) for n in range(3))
    (folders.spool / _id(clash)).write_bytes(b"another process's message\r\n")
    errors = committer.commit([first, clash, last])
    assert errors[0] is None
    assert errors[2] is None
    assert errors[1] is not None
    assert errors[1].startswith("spool file:")
    assert "exists" in errors[1]
    assert (folders.spool / _id(clash)).read_bytes() == b"another process's message\r\n"  # never replaced
    assert not Path(str(clash[0])).exists()  # its source is removed
    assert (folders.spool / _id(first)).read_bytes() == b"mine 0\r\n"
    assert (folders.spool / _id(last)).read_bytes() == b"mine 2\r\n"
    assert folders.known() == {_id(first), _id(last)}


@pytest.mark.parametrize("spooled", [2, 5], ids=["one-by-one", "in-parallel"])
def test_a_missing_source_file_fails_that_message_only(
    committer: Committer, folders: Folders, spooled: int
) -> None:
    items = [folders.spooled(b"m%d\r\n" % n) for n in range(spooled)]
    Path(str(items[1][0])).unlink()
    errors = committer.commit(items)
    assert errors[1] is not None
    assert errors[1].startswith("spool file:")
    assert [error for n, error in enumerate(errors) if n != 1] == [None] * (spooled - 1)
    assert not (folders.spool / _id(items[1])).exists()
    assert folders.known() == {_id(item) for n, item in enumerate(items) if n != 1}


def test_an_index_failure_fails_the_whole_round_and_removes_its_renamed_files(
    committer: Committer, folders: Folders
) -> None:
    taken = folders.inline(b"first\r\n")
    assert committer.commit([taken]) == [None]
    files = [folders.spooled(b"doomed %d\r\n" % n) for n in range(3)]
    again = folders.inline(b"same id\r\n", queue_id=_id(taken))  # the primary key refuses it
    round_items = [files[0], again, *files[1:], folders.inline(b"innocent\r\n")]
    errors = committer.commit(round_items)
    assert all(error is not None and error.startswith("index:") for error in errors), errors
    assert list(folders.spool.iterdir()) == []  # renamed, then removed again
    assert list(folders.incoming.iterdir()) == []
    assert folders.known() == {_id(taken)}  # the transaction left nothing behind
    later = folders.spooled(b"later\r\n")
    assert committer.commit([later]) == [None]  # the next round works
    assert folders.known() == {_id(taken), _id(later)}


def test_a_failed_file_and_an_index_failure_in_one_round(committer: Committer, folders: Folders) -> None:
    taken = folders.inline(b"first\r\n")
    committer.commit([taken])
    missing = folders.spooled(b"gone\r\n")
    Path(str(missing[0])).unlink()
    fine = folders.spooled(b"fine\r\n")
    errors = committer.commit([missing, fine, folders.inline(b"dup\r\n", queue_id=_id(taken))])
    assert errors[0] is not None
    assert errors[0].startswith("spool file:")  # its own reason, not the round's
    assert errors[1] is not None
    assert errors[1].startswith("index:")
    assert errors[2] is not None
    assert errors[2].startswith("index:")
    assert list(folders.spool.iterdir()) == []


# --- the process on its socket pair --------------------------------------------------------------------


class Child:
    """``python -m postroom.queue.committer`` with our end of its socket pair."""

    def __init__(self, folders: Folders) -> None:
        self.sock, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "postroom.queue.committer",
                    str(theirs.fileno()),
                    str(folders.database),
                    str(folders.spool),
                    "100",
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        self.sock.settimeout(_ANSWER_WAIT)
        self._buffer = bytearray()

    def send(self, *requests: tuple[int, list[Item]]) -> None:
        self.sock.sendall(b"".join(encode(request) for request in requests))

    def answers(self, count: int) -> list[Any]:
        """The next ``count`` answer frames (the socket's timeout bounds each read)."""
        found: list[Any] = []
        for _ in range(1000):
            found += [decode(frame) for frame in split(self._buffer)]
            if len(found) >= count:
                return found
            data = self.sock.recv(1 << 16)
            if not data:
                break
            self._buffer += data
        raise AssertionError(f"{len(found)} answers of {count}")

    def close(self) -> int:
        self.sock.close()
        try:
            return self.process.wait(_ANSWER_WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def child(folders: Folders) -> Iterator[Child]:
    running = Child(folders)
    try:
        yield running
    finally:
        running.close()


def test_the_process_answers_each_batch_by_its_number(child: Child, folders: Folders) -> None:
    first = [folders.spooled(b"a\r\n"), folders.inline(b"b\r\n")]
    second = [folders.spooled(b"c\r\n")]
    child.send((7, first), (8, second))
    answers = child.answers(2)
    assert sorted(answer[:2] for answer in answers) == [(7, [None, None]), (8, [None])]
    rounds = {number: durable for _, _, number, durable in answers}  # one round or two, as they came
    assert sum(rounds.values()) == 3
    assert folders.known() == {_id(item) for item in first + second}
    assert (folders.spool / _id(second[0])).read_bytes() == b"c\r\n"


def test_the_process_answers_a_failure_with_its_reason(child: Child, folders: Folders) -> None:
    item = folders.spooled(b"x\r\n")
    Path(str(item[0])).unlink()
    child.send((1, [item]))
    ((number, (error,), _, durable),) = child.answers(1)
    assert durable == 0
    assert number == 1
    assert error.startswith("spool file:")
    assert "No such file" in error


def test_the_process_ends_with_its_socket(child: Child) -> None:
    assert child.close() == 0


def test_the_process_ignores_sigterm_and_sigint(child: Child, folders: Folders) -> None:
    """A stop signal to the whole process group must not cut a commit short: the server ends it."""
    child.send((1, [folders.inline(b"before\r\n")]))
    child.answers(1)
    child.process.send_signal(signal.SIGTERM)
    child.process.send_signal(signal.SIGINT)
    item = folders.spooled(b"after\r\n")
    child.send((2, [item]))
    assert [answer[:2] for answer in child.answers(1)] == [(2, [None])]
    assert child.process.poll() is None
    assert child.close() == 0


def test_the_process_without_its_arguments_says_how_to_run_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "postroom.queue.committer"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "usage: python -m postroom.queue.committer FD DATABASE SPOOL_DIR MAX_BATCH" in done.stderr


def test_the_database_is_left_closed_and_consistent(child: Child, folders: Folders) -> None:
    child.send((1, [folders.spooled(b"z\r\n")]))
    child.answers(1)
    assert child.close() == 0
    conn = sqlite3.connect(folders.database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
