"""The server's side of the commit process (committer.py): the same job as commit.py's GroupCommitter
(``submit`` a sealed message, get its queue id once file and rows are durable), done by another process.

The event loop closes a spooled message's file (its last buffer written here, no sync) and sends what
was submitted in one turn of the loop as one frame, at the end of that turn: the process starts syncing
a file as soon as it arrives and gathers what arrives while it works into one round (group commit). The
socket pair is read by the loop like any other socket; answers resolve the sessions' futures. If the
commit process ends, every message waiting for it fails (QueueError: the client gets 451, nothing was
acknowledged) and a new one is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from postroom.observe.log import Logger
from postroom.queue.frames import decode, encode, split
from postroom.queue.index import NewMessage
from postroom.queue.model import CommitStats, QueueError
from postroom.queue.spool import SpoolWriter

__all__ = ["ProcessCommitter"]

_STOP_WAIT = 30.0  # seconds stop() waits for answers still due, then for the process to exit
_RESTART_GAP = 1.0  # seconds between starts of the process at least (one that cannot start is not spun)


@dataclass(frozen=True, slots=True)
class _Pending:
    writer: SpoolWriter
    message: NewMessage
    future: asyncio.Future[str]


class _Answers(asyncio.Protocol):
    """Reads answer frames from the socket pair and hands each to the committer."""

    def __init__(self, owner: ProcessCommitter) -> None:
        self._owner = owner
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        for frame in split(self._buffer):
            self._owner.answered(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.lost()


class ProcessCommitter:
    """Submits sealed messages to the commit process; one per Queue, started and stopped with it."""

    def __init__(
        self,
        *,
        database_path: Path,
        spool_dir: Path,
        max_batch: int,
        log: Logger,
        on_commit: Callable[[], None],
    ) -> None:
        self._database_path = database_path
        self._spool_dir = spool_dir
        self._max_batch = max(1, max_batch)
        self._log = log
        self._on_commit = on_commit
        self._waiting: list[_Pending] = []  # submitted this turn of the loop, not sent yet
        self._flush_due = False  # a call to _send is scheduled for the end of this turn
        self._sent: dict[int, list[_Pending]] = {}  # batch number -> its messages, until answered
        self._answered = asyncio.Event()  # set whenever nothing sent waits for its answer (stop waits on it)
        self._numbers = itertools.count()
        self._process: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        self._accepting = False
        self._stopping = False
        self._started_at = 0.0  # loop time of the last start
        self._socket: socket.socket | None = None  # our end of the socket pair
        self._restarting: asyncio.Task[None] | None = None  # after the process ended, until a new one runs
        self._batches = self._messages = self._largest = 0
        self._last_round = 0  # the process's round number of the last answer (rounds count as batches)

    async def start(self) -> None:
        self._started_at = asyncio.get_running_loop().time()
        self._last_round = 0  # a new process counts its rounds from 1
        ours, theirs = socket.socketpair()
        self._socket = ours  # closed by stop() if it comes before the transport below
        with theirs:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "postroom.queue.committer",
                str(theirs.fileno()),
                str(self._database_path),
                str(self._spool_dir),
                str(self._max_batch),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the server's group (Ctrl-C) is not for it: EOF ends it
            )
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: _Answers(self), ours)
        self._transport = transport
        self._accepting = True
        self._log.debug("queue.commit_process", pid=self._process.pid)

    async def stop(self) -> None:
        """Waits for the answers still due (bounded), then ends the process."""
        self._stopping = True
        self._accepting = False
        if self._restarting is not None:  # a process that was being started is ended below like any
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
            self._restarting = None
        self._send()
        if self._sent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), _STOP_WAIT)
        if self._transport is not None:
            self._transport.close()
        elif self._socket is not None:
            self._socket.close()
        self._socket = None
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), _STOP_WAIT)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
            self._process = None

    def submit(self, writer: SpoolWriter, message: NewMessage) -> asyncio.Future[str]:
        if not self._accepting or self._transport is None:
            raise QueueError("the queue is not running")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(writer, message, future))
        if not self._flush_due:  # everything submitted in this turn of the loop goes in one frame
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._send)
        return future

    def stats(self) -> CommitStats:
        return CommitStats(batches=self._batches, messages=self._messages, largest_batch=self._largest)

    def _send(self) -> None:
        self._flush_due = False
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self._max_batch):
            self._send_batch(waiting[start : start + self._max_batch])

    def _send_batch(self, batch: list[_Pending]) -> None:
        items: list[tuple[str | None, NewMessage]] = []
        ready: list[_Pending] = []
        for pending in batch:
            try:
                path = str(pending.writer.close_file()) if pending.writer.spilled else None
            except (OSError, QueueError) as exc:
                self._settle(pending, str(exc))
                continue
            items.append((path, pending.message))
            ready.append(pending)
        if not ready:
            return
        if self._transport is None or self._transport.is_closing():
            for pending in ready:
                self._settle(pending, "the commit process is not running")
            return
        number = next(self._numbers)
        self._sent[number] = ready
        self._answered.clear()
        self._transport.write(encode((number, items)))

    def answered(self, frame: bytes) -> None:
        """An answer frame: settle each message of its batch."""
        number, errors, round_number, durable = decode(frame)
        batch = self._sent.pop(number, [])
        if not self._sent:
            self._answered.set()
        for pending, error in zip(batch, errors, strict=True):
            self._settle(pending, error)
        if durable and round_number != self._last_round:  # the first answer of a round that made some
            self._batches += 1
            self._largest = max(self._largest, durable)
        self._last_round = round_number
        done = errors.count(None)
        if done:
            self._messages += done
            self._on_commit()

    def _settle(self, pending: _Pending, error: str | None) -> None:
        queue_id = pending.message.queue_id
        if error is None:
            pending.writer.moved_to(self._spool_dir / queue_id)
            if not pending.future.done():
                pending.future.set_result(queue_id)
            return
        pending.writer.remove()
        self._log.error("queue.commit_failed", queue_id=queue_id, error=error)
        if not pending.future.done():
            pending.future.set_exception(QueueError(f"commit failed: {error}"))

    def lost(self) -> None:
        """The socket pair closed: answers still due will never come; a new process unless stopping."""
        self._transport = None
        sent, self._sent = self._sent, {}
        self._answered.set()
        waiting, self._waiting = self._waiting, []  # gathered for the next frame: never sent
        for batch in [*sent.values(), waiting]:
            for pending in batch:
                self._settle(pending, "the commit process ended")
        if self._stopping:
            return
        self._log.error("queue.commit_process_lost", failed=sum(map(len, sent.values())) + len(waiting))
        self._accepting = False
        self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        await asyncio.sleep(max(0.0, self._started_at + _RESTART_GAP - asyncio.get_running_loop().time()))
        if self._stopping:
            return
        try:
            await self.start()
        except Exception as exc:  # any reason: logged; commits get 451 until a start works
            self._log.failure("queue.commit_process_failed", exc)
        finally:
            self._restarting = None
